"""A flask-sock app as its README writes it, imports switched to geventws.compat.flask_sock.

``COMPAT_ORIGINAL=1`` imports the original flask-sock instead, to run the same
tests against it.  Served by ``flask run`` (unpatched threads), gunicorn
``-k gthread`` and ``-k gevent``, and in-process by pywsgi.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Blueprint, Flask

if os.environ.get("COMPAT_ORIGINAL"):
    from flask_sock import ConnectionClosed, Sock
else:
    from geventws.compat.flask_sock import ConnectionClosed, Sock

app = Flask(__name__)
app.config["SOCK_SERVER_OPTIONS"] = {
    "ping_interval": 25,
    "max_message_size": 2 * 1024 * 1024,
    "subprotocols": ["chat.v2", "chat.v1"],
}
sock = Sock(app)
api = Blueprint("api", __name__, url_prefix="/api")
chat_members: list[Any] = []
chat_lock = threading.Lock()


@app.route("/")
def index() -> str:
    return "flask-sock app"


@sock.route("/echo")
def echo(ws: Any) -> None:
    while True:
        data = ws.receive()
        ws.send(data)


@sock.route("/echo/<int:times>", bp=api)
def repeat(ws: Any, times: int) -> None:
    """A blueprint's route with a URL variable (the app registers the blueprint)."""
    data = ws.receive()
    ws.send(data * times)


@sock.route("/subprotocol")
def subprotocol(ws: Any) -> None:
    ws.send(f"speaking {ws.subprotocol}")


@sock.route("/timeout")
def timeout(ws: Any) -> None:
    data = ws.receive(timeout=0.2)
    ws.send("timed out" if data is None else f"got {data}")
    ws.send(f"then {ws.receive()}")


@sock.route("/close")
def close(ws: Any) -> None:
    ws.receive()
    ws.close(reason=4002, message="closing now")


@sock.route("/chat")
def chat(ws: Any) -> None:
    """Every message goes to every other member, sent from this member's handler."""
    with chat_lock:
        chat_members.append(ws)
        count = len(chat_members)
    ws.send(f"welcome {count}")
    try:
        while True:
            data = ws.receive()
            with chat_lock:
                others = [member for member in chat_members if member is not ws]
            for member in others:
                try:
                    member.send(data)
                except ConnectionClosed:
                    pass
    finally:
        with chat_lock:
            chat_members.remove(ws)


@sock.route("/thread")
def thread(ws: Any) -> None:
    """A send from a thread of the app's own, while the handler waits for the next message."""
    data = ws.receive()
    threading.Thread(target=ws.send, args=(f"from a thread: {data}",)).start()
    ws.send(f"handler got {ws.receive()}")


app.register_blueprint(api)
