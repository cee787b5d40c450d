"""The sans-I/O core: RFC 6455 framing, RFC 7692 compression, close codes and limits.

Nothing in this package touches a socket, a greenlet or an HTTP object, and it
imports neither gevent nor werkzeug (a test checks this): feed an engine the
bytes a peer sent and it returns events and queues the bytes to send back.
"""
