# The C extension _speedups.c; see speedups.py, masking.py, frames.py and reader.py.

from typing import Any

def apply_mask(data: bytes | bytearray | memoryview, mask: bytes, /) -> bytes: ...
def single_frame(data: str | bytes, limit: int, /) -> bytes | None: ...
def set_event_types(
    data: type, ping: type, pong: type, failure: type, close_frame: type, compressed_chunk: type, /
) -> None: ...

class FrameReader:
    def __init__(
        self,
        frame_size_limit: int,
        message_size_limit: int,
        text_only: bool,
        compression: bool,
        whole_frame_limit: int = ...,
    ) -> None: ...
    @property
    def pending(self) -> bytes: ...
    def feed(self, data: bytes | memoryview, events: list[Any], /) -> bool: ...
