"""gevent-websocket's gunicorn worker path (:mod:`.workers`)."""
