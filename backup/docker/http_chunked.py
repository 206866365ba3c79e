"""A fast reader for an HTTP/1.1 chunked body, for Docker's archive stream.

Docker sends archives as 32 KiB HTTP chunks. http.client decodes them one at a time through
several Python layers, which costs as much CPU as compressing the data. This decoder reads 1 MiB
at a time from the connection's buffered reader and cuts the chunk framing out with a few slices.
Pure: it reads from any object with ``read1``.
"""

from __future__ import annotations

from typing import Iterator, Protocol


class ChunkedBodyError(Exception):
    """The body is not valid chunked transfer encoding, or it ended early."""


class _Reader(Protocol):
    def read1(self, size: int) -> bytes: ...


def iter_chunked(reader: _Reader, read_size: int = 1 << 20) -> Iterator[bytes]:
    """Yield the decoded body in pieces of about ``read_size`` bytes; stop after the last chunk.

    Raises ChunkedBodyError on malformed framing or a body cut short.
    """
    buf = b""
    pos = 0
    remaining = 0  # bytes of the current chunk's data not yet taken
    pieces: list[bytes] = []
    held = 0

    def fill() -> None:
        nonlocal buf, pos
        more = reader.read1(read_size)
        if not more:
            raise ChunkedBodyError("the archive stream ended early")
        buf = buf[pos:] + more
        pos = 0

    while True:
        if remaining:
            if pos >= len(buf):
                fill()
            take = min(remaining, len(buf) - pos)
            pieces.append(buf[pos : pos + take])
            pos += take
            remaining -= take
            held += take
            if held >= read_size:
                yield b"".join(pieces)
                pieces.clear()
                held = 0
            if remaining:
                continue
            while len(buf) - pos < 2:
                fill()
            if buf[pos : pos + 2] != b"\r\n":
                raise ChunkedBodyError("malformed chunked encoding (missing CRLF after a chunk)")
            pos += 2
        end = buf.find(b"\r\n", pos)
        while end < 0:
            if len(buf) - pos > 4096:
                raise ChunkedBodyError("malformed chunked encoding (chunk size line too long)")
            fill()
            end = buf.find(b"\r\n", pos)
        size_text = buf[pos:end].split(b";", 1)[0].strip()
        try:
            remaining = int(size_text, 16)
        except ValueError:
            raise ChunkedBodyError(f"malformed chunked encoding (chunk size {size_text[:20]!r})") from None
        pos = end + 2
        if remaining == 0:  # last chunk; trailers, if any, are of no interest
            if pieces:
                yield b"".join(pieces)
            return
