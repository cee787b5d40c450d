"""One WebSocket connection after the handshake: the client, its writer, messages, stats,
heartbeat and rate limit.  It runs on gevent and knows nothing of HTTP."""
