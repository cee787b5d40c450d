"""A Flask app with a chat that only logged-in users may open.

Plain Flask (a blueprint, login through the session, JSON routes, templates,
static files) with one WebSocket route that broadcasts through a gateway.

Run it with our server (http://127.0.0.1:5000)::

    python examples/flask_app/app.py

or under gunicorn with the geventws worker::

    gunicorn -k geventws.gunicorn.Worker -w 1 -b 127.0.0.1:5000 --chdir examples/flask_app app:app

Set ``BEHIND_PROXY=1`` when it runs behind nginx (see README.rst, Deployment).
"""

# Patch first, before anything imports socket, time or threading.
from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from chat import bp, ws  # noqa: E402
from flask import Flask  # noqa: E402
from werkzeug.middleware.proxy_fix import ProxyFix  # noqa: E402


def create_app() -> Flask:
    """The application factory: the extension and the blueprint are registered here."""
    app = Flask(__name__)
    app.secret_key = os.environ.get("SECRET_KEY", "change me: sessions are signed with this key")
    app.register_blueprint(bp)
    ws.init_app(app)
    if os.environ.get("BEHIND_PROXY"):
        # Behind one reverse proxy (nginx): trust its X-Forwarded-For/-Proto/-Host, one hop only.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    return app


app = create_app()


def main() -> None:
    from geventws import Server, trap_signal

    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logger = logging.getLogger("flask_app")
    port = int(os.environ.get("PORT", "5000"))
    server = Server(logger)
    server.expose(("127.0.0.1", port))
    server.start(app)
    signum = trap_signal([signal.SIGINT, signal.SIGTERM])
    logger.info("Received signal %d, stopping", signum)
    server.stop()


if __name__ == "__main__":
    main()
