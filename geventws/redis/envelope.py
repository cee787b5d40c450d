"""The message format on a channel (version 1), so other languages can publish too.

One line of JSON (UTF-8, no newline inside), a newline, then the payload
bytes (UTF-8 for text)::

    {"geventws":1,"from":"<publisher id>","type":"text","exclude":[12]}\\n<payload>

``type`` is ``"text"`` or ``"binary"``; ``exclude`` (a broadcast) or ``to``
(a multicast to ids) are optional lists of client ids; ``from`` is any string
unique to the publisher.  A message that does not parse, or has another
version, is logged (once per kind of fault) and skipped.

Two optional fields came with room history, without a new version (readers
that do not know them ignore them, and the payload is final either way):
``offset``, the message's offset in its room's history (its stream entry id,
see :mod:`geventws.redis.history`), and ``ref``, a number unique to the
publisher that lets it recognize its own message when it comes back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NamedTuple

#: The version of the message format this module writes and reads.
FORMAT_VERSION = 1


class Envelope(NamedTuple):
    """One message on a channel, decoded."""

    origin: str
    data: str | bytes
    exclude: tuple[int, ...] = ()
    to: tuple[int, ...] | None = None
    offset: str | None = None  # in the room's history, if it keeps one
    ref: int | None = None  # the publisher's number for it


class EnvelopeError(ValueError):
    """Not a message of ours: ``kind`` names the fault, for logging once per kind."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}{': ' + detail if detail else ''}")
        self.kind = kind


def encode_envelope(
    origin: str,
    data: str | bytes,
    exclude: Iterable[int] = (),
    to: Iterable[int] | None = None,
    *,
    ref: int | None = None,
) -> bytes:
    """The bytes published for one send (see :mod:`geventws.redis.envelope` for the format)."""
    header: dict[str, Any] = {"geventws": FORMAT_VERSION, "from": origin}
    if isinstance(data, str):
        header["type"] = "text"
        payload = data.encode("utf-8")
    else:
        header["type"] = "binary"
        payload = bytes(data)
    excluded = list(exclude)
    if excluded:
        header["exclude"] = excluded
    if to is not None:
        header["to"] = list(to)
    if ref is not None:
        header["ref"] = ref
    return json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n" + payload


def decode_envelope(raw: bytes) -> Envelope:
    """Parse a published message; :class:`EnvelopeError` for anything that is not ours."""
    end = raw.find(b"\n")
    if end < 0 or not raw.startswith(b"{"):
        raise EnvelopeError("not a geventws message")
    try:
        header = json.loads(raw[:end])
    except ValueError as error:
        raise EnvelopeError("not a geventws message", str(error)) from None
    if not isinstance(header, dict) or "geventws" not in header:
        raise EnvelopeError("not a geventws message")
    if header["geventws"] != FORMAT_VERSION:
        raise EnvelopeError(f"unsupported format version {header['geventws']!r}")
    origin, kind = header.get("from"), header.get("type")
    exclude, to = header.get("exclude", []), header.get("to")
    offset, ref = header.get("offset"), header.get("ref")
    if (
        not isinstance(origin, str)
        or kind not in ("text", "binary")
        or not _is_ids(exclude)
        or not _is_ids(to, None)
        or not isinstance(offset, (str, type(None)))
        or not (ref is None or type(ref) is int)
    ):
        raise EnvelopeError("malformed header", raw[:end].decode("utf-8", "replace")[:200])
    payload = raw[end + 1 :]
    data: str | bytes = payload
    if kind == "text":
        try:
            data = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeError("text payload is not UTF-8") from None
    return Envelope(origin, data, tuple(exclude), None if to is None else tuple(to), offset, ref)


def _is_ids(value: object, *also: None) -> bool:
    """Whether ``value`` is a list of client ids (or one of ``also``)."""
    if value is None:
        return None in also
    return isinstance(value, list) and all(type(item) is int for item in value)
