"""The small Flask app every server in test_flask_servers.py serves (gunicorn imports it too).

Session login, a JSON route, an echo route that greets the logged-in user,
a broadcast route, and a refused anonymous handshake.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import flask

from geventws import WebsocketClient, WebsocketClientGateway
from geventws.flask import Websockets

app = flask.Flask(__name__)
app.secret_key = "test secret"
ws = Websockets(app)
gateway = WebsocketClientGateway()


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "user" not in flask.session:
            return flask.jsonify(error="Log in first"), 401
        return view(*args, **kwargs)

    return wrapper


@app.get("/")
def index() -> str:
    return "plain HTTP works"


@app.post("/login")
def login() -> Any:
    flask.session["user"] = flask.request.form["name"]
    return flask.jsonify(user=flask.session["user"])


@app.get("/api/me")
@login_required
def me() -> Any:
    return flask.jsonify(user=flask.session["user"], pid=os.getpid())


@ws.route("/echo", decorators=[login_required])
def echo(client: WebsocketClient) -> None:
    client.send_text(f"hello {flask.session['user']} from {flask.request.path} pid {os.getpid()}")
    for message in client:
        data = message.buffer()
        if isinstance(data, str):
            client.send_text(data)
        else:
            client.send_binary(data)


@ws.route("/broadcast", decorators=[login_required])
def broadcast(client: WebsocketClient) -> None:
    gateway.add_client(client)
    client.send_text(f"joined pid {os.getpid()}")
    for message in client:
        gateway.broadcast_text(f"{flask.session['user']}: {message}")
