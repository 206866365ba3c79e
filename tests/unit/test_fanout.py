import threading
from typing import Iterable

import pytest

from backup.streams.fanout import QUEUE_DEPTH, save_to_all
from storage_backends import PermanentError
from storage_backends.local import LocalBackend
from tests.support.threads import Running


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


def test_a_backend_that_dies_without_reading_releases_a_source_waiting_on_it(tmp_path):
    release = threading.Event()

    class StuckBackend(LocalBackend):
        def save(self, key, chunks):
            release.wait(10)  # takes nothing until the source has filled its channel
            raise PermanentError(f"{self.url}: hung up")

    def source():
        for i in range(50):
            if i == QUEUE_DEPTH:
                release.set()  # this chunk finds the stuck backend's channel full
            yield b"z" * 100

    good, stuck = LocalBackend(tmp_path / "good"), StuckBackend(tmp_path / "stuck")
    outcomes = Running(lambda: save_to_all([good, stuck], "v/x", source())).finish()
    by_url = {o.backend.url: o for o in outcomes}
    assert by_url[good.url].ok and by_url[good.url].stored == 5000
    assert "hung up" in str(by_url[stuck.url].error)
