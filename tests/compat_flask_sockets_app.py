"""A Flask-Sockets app as its README writes it (blueprints, a session), imports switched to geventws.compat.

Served in-process on pywsgi with gevent-websocket's handler, and by gunicorn
with ``-k geventws.compat.flask_sockets.worker``.
"""

from __future__ import annotations

from typing import Any

import flask
from flask import Blueprint, Flask

from geventws.compat.flask_sockets import Sockets

html = Blueprint(r"html", __name__)
ws = Blueprint(r"ws", __name__)


@html.route("/")
def hello() -> str:
    return "Hello World!"


@html.route("/login", methods=["POST"])
def login() -> Any:
    flask.session["user"] = flask.request.form["name"]
    return flask.jsonify(user=flask.session["user"])


@ws.route("/echo")
def echo_socket(socket: Any) -> None:
    while not socket.closed:
        message = socket.receive()
        socket.send(message)


@ws.route("/whoami")
def whoami(socket: Any) -> None:
    socket.send(f"{flask.session.get('user', 'anonymous')} on {flask.request.path}")


app = Flask(__name__)
app.secret_key = "flask-sockets test"
sockets = Sockets(app)


@sockets.route("/room/<name>")
def room(socket: Any, name: str) -> None:
    socket.send(f"room {name}")


app.register_blueprint(html, url_prefix=r"/")
sockets.register_blueprint(ws, url_prefix=r"/ws")
