import io

import pytest

from backup.docker.http_chunked import ChunkedBodyError, iter_chunked


class Trickle(io.BytesIO):
    """A reader that hands out at most ``step`` bytes per read1, like a slow socket."""

    def __init__(self, data: bytes, step: int):
        super().__init__(data)
        self.step = step

    def read1(self, size: int = -1) -> bytes:
        return super().read1(min(size, self.step))


def _encode(payload: bytes, chunk: int) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(payload[i : i + chunk]), payload[i : i + chunk]) for i in range(0, len(payload), chunk))
    return out + b"0\r\n\r\n"


@pytest.mark.parametrize("chunk", [1, 7, 32768])
@pytest.mark.parametrize("step", [1, 3, 1000, 1 << 20])
def test_decodes_any_framing_and_read_pattern(chunk, step):
    payload = bytes(range(256)) * 300
    decoded = b"".join(iter_chunked(Trickle(_encode(payload, chunk), step), read_size=4096))
    assert decoded == payload


def test_chunk_extensions_and_trailers_are_ignored():
    body = b"5;name=value\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"
    assert b"".join(iter_chunked(io.BytesIO(body))) == b"hello"


@pytest.mark.parametrize("body", [b"5\r\nhel", b"5\r\nhelloXX0\r\n\r\n", b"zz\r\nhello\r\n", b"5\r\nhello\r\n"])
def test_broken_bodies_raise(body):
    with pytest.raises(ChunkedBodyError):
        b"".join(iter_chunked(io.BytesIO(body)))
