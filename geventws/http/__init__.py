"""The HTTP side: the server, the pywsgi request handler and socket hand-over, the
WebSocket endpoint with its acceptors, the router, static files and error pages."""
