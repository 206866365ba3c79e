from typing import Iterable

import pytest

from backup.streams.fanout import save_to_all
from storage_backends import PermanentError
from storage_backends.local import LocalBackend


class FailingBackend(LocalBackend):
    """A local backend whose save fails after a number of chunks."""

    def __init__(self, root, fail_after: int):
        super().__init__(root)
        self.fail_after = fail_after

    def save(self, key: str, chunks: Iterable[bytes]) -> int:
        def limited():
            for i, chunk in enumerate(chunks):
                if i == self.fail_after:
                    raise PermanentError(f"{self.url}: disk on fire")
                yield chunk

        return super().save(key, limited())


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_every_backend_gets_the_same_bytes(tmp_path):
    backends = [LocalBackend(tmp_path / "a"), LocalBackend(tmp_path / "b")]
    chunks = [bytes([i]) * 1000 for i in range(50)]
    outcomes = save_to_all(backends, "v/x.tar.zst", chunks)
    assert all(o.ok and o.stored == 50_000 for o in outcomes)
    assert (tmp_path / "a/v/x.tar.zst").read_bytes() == (tmp_path / "b/v/x.tar.zst").read_bytes() == b"".join(chunks)


def test_one_failing_backend_does_not_stop_the_others(tmp_path):
    good, bad = LocalBackend(tmp_path / "good"), FailingBackend(tmp_path / "bad", fail_after=5)
    outcomes = save_to_all([good, bad], "v/x", (b"x" * 100 for _ in range(100)))
    by_url = {o.backend.url: o for o in outcomes}
    assert by_url[good.url].ok and by_url[good.url].stored == 10_000
    assert not by_url[bad.url].ok and "disk on fire" in str(by_url[bad.url].error)
    assert _files(tmp_path / "bad") == []


def test_failing_source_aborts_every_backend(tmp_path):
    backends = [LocalBackend(tmp_path / "a"), LocalBackend(tmp_path / "b")]

    def source():
        for _ in range(20):
            yield b"y" * 100
        raise RuntimeError("docker stream broke")

    with pytest.raises(RuntimeError, match="docker stream broke"):
        save_to_all(backends, "v/x", source())
    assert _files(tmp_path) == []
