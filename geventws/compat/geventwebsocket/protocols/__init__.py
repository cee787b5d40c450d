"""gevent-websocket's protocol classes (the base one; WAMP is not offered)."""
