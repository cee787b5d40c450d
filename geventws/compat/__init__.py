"""Drop-in replacements for the WebSocket libraries legacy apps already use.

Each module mirrors the module paths of the library it replaces, as
``gevent.socket`` mirrors ``socket``, so that moving is a change of imports:

- ``geventwebsocket.X`` becomes :mod:`geventws.compat.geventwebsocket`\\ ``.X``;
- ``flask_sockets`` becomes :mod:`geventws.compat.flask_sockets`;
- ``flask_sock`` becomes :mod:`geventws.compat.flask_sock`.

They are thin adapters over :class:`~geventws.WebsocketClient`: the protocol,
the limits, the heartbeat and the logging are geventws's own.  Where an
original behaves wrongly (malformed close frames, no UTF-8 checks, no
limits), the adapter behaves as geventws does; docs/migrating.rst lists every
name and every difference.
"""
