"""The scaled-out chat as gunicorn workers, one gateway per worker, all sharing one Redis::

    gunicorn -k geventws.gunicorn.Worker -w 4 -b 127.0.0.1:8000 --chdir examples/broadcast_redis wsgi:app

Each worker imports this module after gunicorn forked it (no ``--preload``),
so each has its own connections to Redis.  ``REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) and ``CHAT_ORIGINS`` (comma-separated, default
the page on port 8000) configure it.
"""

import os

from server import create_app

from geventws.redis import RedisGateway

ORIGINS = os.environ.get("CHAT_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000").split(",")

gateway = RedisGateway(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), "chat")
app = create_app(gateway, ORIGINS)
