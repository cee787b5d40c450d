"""The chat blueprint: login and logout, JSON routes, the page, and the WebSocket route."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, jsonify, redirect, render_template, request, session, url_for

from geventws import WebsocketClient, WebsocketClientGateway
from geventws.flask import Websockets

logger = logging.getLogger("flask_app.chat")
bp = Blueprint("chat", __name__)
ws = Websockets()
#: Everyone in the chat; broadcasts are bounded per client, so a slow browser cannot stall the others.
gateway = WebsocketClientGateway()
#: User name of each connected client, by client id.
online: dict[int, str] = {}


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """401 (as JSON) unless the session holds a user: also refuses the WebSocket handshake."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "user" not in session:
            return jsonify(error="Log in first"), 401
        return view(*args, **kwargs)

    return wrapper


@bp.get("/")
def index() -> Any:
    if "user" not in session:
        return render_template("login.html")
    return render_template("chat.html", user=session["user"], chat_url=url_for("chat.chat"))


@bp.post("/login")
def login() -> Any:
    name = (request.form.get("name") or (request.get_json(silent=True) or {}).get("name") or "").strip()
    if not name or len(name) > 32:
        return jsonify(error="A name of 1 to 32 characters, please"), 400
    session["user"] = name
    if request.is_json:
        return jsonify(user=name)
    return redirect(url_for("chat.index"))


@bp.post("/logout")
def logout() -> Any:
    session.pop("user", None)
    return redirect(url_for("chat.index"))


@bp.get("/api/me")
@login_required
def me() -> Any:
    return jsonify(user=session["user"])


@bp.get("/api/online")
@login_required
def who_is_online() -> Any:
    return jsonify(users=sorted(set(online.values())))


@ws.route("/chat", blueprint=bp, decorators=[login_required])
def chat(client: WebsocketClient) -> None:
    """Runs inside the request context for the whole connection: ``session`` is the user's."""
    user = session["user"]
    # Behind nginx with BEHIND_PROXY=1 this is the browser's address, not nginx's.
    logger.info("%s joined from %s", user, client.remote_address[0])
    online[client.id] = user
    client.on_close(lambda client, info: _leave(client.id, user))
    gateway.add_client(client)
    gateway.broadcast_text(json.dumps({"event": "joined", "user": user}))
    for message in client:
        text = str(message)[:1000]
        gateway.broadcast_text(json.dumps({"event": "message", "user": user, "text": text}))


def _leave(client_id: int, user: str) -> None:
    online.pop(client_id, None)
    gateway.broadcast_text(json.dumps({"event": "left", "user": user}))
