"""Fault injection for the S3 backend and the retry layer.

Faults come in through botocore's event hooks on the backend's own client (``before-send`` answers
or raises instead of sending; ``after-call`` breaks after the server has acted), or through a small
TCP proxy on 127.0.0.1 that cuts real connections in the middle of a download. Every S3 test talks to
moto's HTTP server (see backend_conformance.py); nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import re
import select
import socket
import struct
import threading
import time
import traceback
from typing import Callable, Iterator

import boto3
import pytest
from moto.core import set_initial_no_auth_action_count

pytest.register_assert_rewrite("tests.support.backend_conformance")  # before the import, so its asserts explain

from tests.support.threads import parked_in  # noqa: E402
from tests.support.backend_conformance import (  # noqa: E402
    MULTI,
    MiB,
    PART,
    PREFIX,
    SECRET,
    Boom,
    created_bucket,
    failing_chunks,
    leftovers,
    payload,
    read_all,
    unique_bucket_name,
)
from botocore.awsrequest import AWSResponse  # noqa: E402
from botocore.exceptions import ConnectionClosedError  # noqa: E402

from storage_backends.base import NotFound, PermanentError, TransientError  # noqa: E402
from storage_backends.local import LocalBackend  # noqa: E402
from storage_backends.registry import open_backend  # noqa: E402
from storage_backends.retry import (  # noqa: E402
    ResumingReader,
    RetryingBackend,
    RetryPolicy,
    with_retries,
)
from storage_backends.s3 import S3Backend  # noqa: E402


ATTEMPTS = 4


# -- fault injection helpers -----------------------------------------------------------------


class _RawBody:
    """The minimal raw response AWSResponse reads a body from."""

    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_kwargs) -> Iterator[bytes]:
        yield self._body


def error_answer(status: int, code: str) -> Callable[[object], AWSResponse]:
    """Return a fault that answers with an S3 error document instead of sending the request."""
    body = f"<Error><Code>{code}</Code><Message>injected {code}</Message></Error>".encode()
    return lambda request: AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _RawBody(body))


def connection_closed(request) -> None:
    """A fault that drops the connection before the answer arrives (after-call: after the server
    acted on the request, so only the answer is lost)."""
    raise ConnectionClosedError(endpoint_url=request.url if request is not None else "(answer lost)")


class Injector:
    """Fails the first ``times`` requests of one S3 operation (all of them if ``times`` is None)."""

    def __init__(self, backend: S3Backend, operation: str, fault: Callable, times: int | None = None,
                 *, event: str = "before-send", spare: int = 0):
        self.fault = fault
        self.times = times
        self.spare = spare  # let this many calls through before failing any
        self.calls = 0
        self.failed = 0
        self.urls: list[str] = []
        self._lock = threading.Lock()  # part uploads call in from several threads
        self._events = backend.client.meta.events
        self._name = f"{event}.s3.{operation}"
        self._events.register(self._name, self)

    def __call__(self, **kwargs):
        request = kwargs.get("request")
        with self._lock:
            self.calls += 1
            if request is not None:
                self.urls.append(request.url)
            fail = self.calls > self.spare and (self.times is None or self.failed < self.times)
            if fail:
                self.failed += 1
        if fail:
            return self.fault(request)
        return None

    def remove(self) -> None:
        self._events.unregister(self._name, self)


def count_calls(backend: S3Backend, operation: str) -> list[int]:
    """Return a list that grows by one for every successful call of ``operation``."""
    seen: list[int] = []
    backend.client.meta.events.register(f"after-call.s3.{operation}", lambda **_kw: seen.append(1))
    return seen


@pytest.fixture
def sleeps() -> list[float]:
    """The delays the retry policy asked for; nothing actually sleeps."""
    return []


@pytest.fixture
def policy(sleeps: list[float]) -> RetryPolicy:
    return RetryPolicy(attempts=ATTEMPTS, base_delay=0.01, max_delay=0.05, sleep=sleeps.append)


@pytest.fixture
def s3(s3_http, policy: RetryPolicy) -> Iterator[S3Backend]:
    """An S3Backend (3 parallel 5 MiB parts) on a fresh bucket of moto's HTTP server."""
    backend = S3Backend.from_url(f"s3://{unique_bucket_name()}/{PREFIX}", part_size=PART, concurrency=3, retry=policy)
    with created_bucket(backend):
        yield backend


@pytest.fixture
def inject(s3: S3Backend) -> Iterator[Callable[..., Injector]]:
    """Make Injectors (on ``s3`` unless ``backend=`` is given); they are removed before the bucket
    is cleaned up, so that the clean-up itself is not failed."""
    made: list[Injector] = []

    def make(operation: str, fault: Callable, times: int | None = None, *, backend: S3Backend = s3, **kw) -> Injector:
        made.append(Injector(backend, operation, fault, times, **kw))
        return made[-1]

    yield make
    for injector in made:
        injector.remove()


def assert_clean_line(err: BaseException, backend: S3Backend, *secrets: str) -> None:
    """The error is one line naming the backend, and shows no secret anywhere, traceback included."""
    text = str(err)
    assert text.startswith(f"{backend.url}: "), text
    assert "\n" not in text
    dump = "".join(traceback.format_exception(err)) + repr(backend)
    for secret in (SECRET, *secrets):
        assert secret not in dump


# -- uploads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [error_answer(500, "InternalError"), error_answer(503, "SlowDown"), connection_closed],
    ids=["500", "503-slowdown", "connection-closed"],
)
def test_failing_part_uploads_are_retried(s3: S3Backend, inject, sleeps: list[float], fault) -> None:
    data = payload(MULTI, seed=10)
    parts = inject("UploadPart", fault, times=3)
    assert s3.save("vol/a", [data]) == len(data)
    assert parts.calls == 3 + 3  # three parts, three failed tries
    assert len(sleeps) == 3
    assert read_all(s3, "vol/a") == data
    assert leftovers(s3) == []


def test_failing_single_put_is_retried(s3: S3Backend, inject, sleeps: list[float]) -> None:
    puts = inject("PutObject", error_answer(500, "InternalError"), times=2)
    assert s3.save("small", [b"abc"]) == 3
    assert puts.calls == 3 and len(sleeps) == 2
    assert read_all(s3, "small") == b"abc"


def test_persistent_part_failure_aborts_with_clean_error(s3: S3Backend, inject) -> None:
    parts = inject("UploadPart", error_answer(500, "InternalError"))
    produced = []

    def chunks() -> Iterator[bytes]:
        for _ in range(40):  # 200 MiB if it were all read
            produced.append(PART)
            yield bytes(PART)

    with pytest.raises(TransientError) as caught:
        s3.save("vol/a", chunks())
    assert "InternalError" in str(caught.value)
    assert_clean_line(caught.value, s3)
    per_part = [int(re.search(r"partNumber=(\d+)", url).group(1)) for url in parts.urls]
    assert max(per_part.count(n) for n in set(per_part)) == ATTEMPTS
    assert sum(produced) <= (3 + 2) * PART  # stopped reading soon after the failure
    assert leftovers(s3) == []
    with pytest.raises(NotFound):
        s3.stat("vol/a")


def test_permanent_part_failure_is_not_retried(s3: S3Backend, inject, sleeps: list[float]) -> None:
    parts = inject("UploadPart", error_answer(403, "AccessDenied"))
    with pytest.raises(PermanentError) as caught:
        s3.save("vol/a", [payload(MULTI)])
    assert str(caught.value) == f"{s3.url}: access denied (check credentials)"
    assert parts.calls <= 3 and sleeps == []
    assert leftovers(s3) == []


def test_keyboard_interrupt_from_chunks_aborts_upload(s3: S3Backend) -> None:
    created = count_calls(s3, "CreateMultipartUpload")
    aborted = count_calls(s3, "AbortMultipartUpload")
    old = payload(100, seed=11)
    s3.save("vol/a", [old])
    with pytest.raises(KeyboardInterrupt):
        s3.save("vol/a", failing_chunks(payload(MULTI), 2 * PART + 1, KeyboardInterrupt()))
    assert (len(created), len(aborted)) == (1, 1)
    assert leftovers(s3) == []
    assert read_all(s3, "vol/a") == old


def test_failed_abort_is_noted_on_the_original_exception(s3: S3Backend, inject) -> None:
    inject("AbortMultipartUpload", error_answer(500, "InternalError"))
    with pytest.raises(Boom) as caught:
        s3.save("vol/a", failing_chunks(payload(MULTI), PART + 1))
    (note,) = caught.value.__notes__
    assert note.startswith(f"{s3.url}: could not abort multipart upload ")
    assert leftovers(s3) == [f"{PREFIX}/vol/a"]  # left for the lifecycle rule; the fixture cleans up


def test_parts_upload_in_parallel_with_bounded_memory(s3: S3Backend) -> None:
    """While part uploads are stalled, save reads at most concurrency + 1 parts of input."""
    gate = threading.Event()
    waiting = []
    lock = threading.Lock()

    def stall(request, **_kwargs):
        with lock:
            waiting.append(1)
        gate.wait(10)
        with lock:
            waiting.pop()

    s3.client.meta.events.register("before-send.s3.UploadPart", stall)
    block = payload(MiB, seed=12)
    consumed = [0]
    digest = hashlib.sha256()

    def chunks() -> Iterator[bytes]:
        for _ in range(7 * PART // MiB):
            consumed[0] += len(block)
            digest.update(block)
            yield block

    snapshot = {}

    saver = threading.current_thread()

    def observe() -> None:
        try:
            deadline = time.monotonic() + 10
            while len(waiting) < s3.concurrency and time.monotonic() < deadline:
                time.sleep(0.01)
            # Every upload slot is stalled: save must now wait for a part to finish, having read no further.
            parked_in(saver, "concurrent/futures/_base.py", "wait")
            with lock:
                snapshot.update(consumed=consumed[0], waiting=len(waiting))
        except AssertionError as exc:
            snapshot["error"] = exc
        finally:
            gate.set()

    observer = threading.Thread(target=observe)
    observer.start()
    try:
        assert s3.save("big", chunks()) == 7 * PART
    finally:
        gate.set()
        observer.join()
    assert "error" not in snapshot, snapshot.get("error")
    assert snapshot["waiting"] == s3.concurrency
    assert snapshot["consumed"] <= (s3.concurrency + 1) * PART + MiB
    with s3.open("big") as stream:
        assert hashlib.sha256(stream.read()).digest() == digest.digest()


def test_lost_complete_answer_is_recognised(s3: S3Backend, inject) -> None:
    """The first CompleteMultipartUpload works but its answer is lost; the retry finds the upload
    gone (NoSuchUpload) and accepts the stored object because its ETag is the one the parts make."""
    inject("CompleteMultipartUpload", connection_closed, times=1, event="after-call")
    inject("CompleteMultipartUpload", error_answer(404, "NoSuchUpload"), times=1, spare=1)
    data = payload(MULTI, seed=13)
    assert s3.save("vol/a", [data]) == len(data)
    assert read_all(s3, "vol/a") == data


def test_complete_that_never_happened_is_not_mistaken_for_success(s3: S3Backend, inject) -> None:
    inject("CompleteMultipartUpload", error_answer(404, "NoSuchUpload"))
    with pytest.raises(PermanentError) as caught:
        s3.save("vol/a", [payload(MULTI)])
    assert "multipart upload no longer exists" in str(caught.value)
    with pytest.raises(NotFound):
        s3.stat("vol/a")


def test_storage_class_and_encryption_apply_to_both_upload_kinds(s3_http) -> None:
    backend = S3Backend.from_url(
        f"s3://{unique_bucket_name()}/{PREFIX}", part_size=PART, storage_class="STANDARD_IA", sse="AES256",
    )
    with created_bucket(backend):
        backend.save("small", [b"x"])
        backend.save("big", [payload(MULTI)])
        for key in ("small", "big"):
            head = backend.client.head_object(Bucket=backend.bucket, Key=f"{PREFIX}/{key}")
            assert (head.get("StorageClass"), head.get("ServerSideEncryption")) == ("STANDARD_IA", "AES256")


def test_path_style_addressing_reaches_a_hostname_endpoint(s3_http: str) -> None:
    endpoint = s3_http.replace("127.0.0.1", "localhost")
    backend = S3Backend(unique_bucket_name(), PREFIX, endpoint_url=endpoint, path_style=True)
    sent = Injector(backend, "PutObject", lambda request: None, times=0)
    with created_bucket(backend):
        backend.save("k", [b"1"])
        assert sent.urls[-1] == f"{endpoint}/{backend.bucket}/{PREFIX}/k"  # not http://BUCKET.localhost
        assert read_all(backend, "k") == b"1"


# -- downloads -------------------------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 that cuts chosen connections after some bytes from the server.

    ``cut(n1, n2, ...)`` arms the next connections: the k-th new connection is cut after ``nk``
    bytes of answer (None: not cut), with a FIN or, if ``reset``, an RST. ``requests`` holds the
    start of what each connection sent. One thread per connection owns both of its sockets, so a
    cut takes effect at once.
    """

    def __init__(self, upstream: str, *, reset: bool = False):
        host, port = upstream.removeprefix("http://").split(":")
        self._upstream = (host, int(port))
        self.reset = reset
        self._budgets: list[int | None] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._start(self._accept_loop)

    def cut(self, *budgets: int | None) -> None:
        with self._lock:
            self._budgets.extend(budgets)

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                budget = self._budgets.pop(0) if self._budgets else None
                index = len(self.requests)
                self.requests.append(b"")
            self._start(self._relay, client, index, budget)

    def _relay(self, client: socket.socket, index: int, budget: int | None) -> None:
        server = socket.create_connection(self._upstream, timeout=10)
        cut = False
        try:
            while not self._closing.is_set():
                readable, _, _ = select.select([client, server], [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        with self._lock:
                            self.requests[index] += data[: max(0, 4096 - len(self.requests[index]))]
                        server.sendall(data)
                    elif budget is not None and len(data) >= budget:
                        client.sendall(data[:budget])
                        cut = True
                        return
                    else:
                        budget = None if budget is None else budget - len(data)
                        client.sendall(data)
        except OSError:
            pass
        finally:
            if cut and self.reset:  # linger 0: close() sends an RST, the reader sees a reset
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            server.close()

    def close(self) -> None:
        self._closing.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def ranges(self) -> list[str | None]:
        """The Range header of each request seen, in order."""
        found = [re.search(rb"(?i)\r\nrange: bytes=([0-9-]+)", head) for head in self.requests]
        return [m.group(1).decode() if m else None for m in found]


@pytest.fixture(params=["eof", "reset"])
def proxy(request, s3_http: str) -> Iterator[CuttingProxy]:
    """A CuttingProxy in front of moto's server; cut connections end with a FIN or an RST."""
    proxy = CuttingProxy(s3_http, reset=request.param == "reset")
    try:
        yield proxy
    finally:
        proxy.close()


def reader_through(proxy: CuttingProxy, s3: S3Backend, policy: RetryPolicy) -> S3Backend:
    """Return a backend on ``s3``'s bucket whose requests go through ``proxy``."""
    return S3Backend(s3.bucket, PREFIX, endpoint_url=proxy.url, retry=policy, read_timeout=10)


@pytest.mark.parametrize("drops", [1, 3])
def test_download_resumes_after_connection_drops(s3: S3Backend, proxy: CuttingProxy, policy: RetryPolicy, drops: int) -> None:
    data = payload(3 * 1024 * 1024 + 17, seed=14)
    s3.save("vol/a", [data])
    proxy.cut(*[700_000] * drops)
    reader = reader_through(proxy, s3, policy)
    with reader.open("vol/a") as stream:
        assert stream.read() == data
        assert stream.raw.resumes == drops
    ranges = proxy.ranges()
    assert ranges[0] is None and len(ranges) == drops + 1
    assert all(b"\r\nIf-Match: " in head for head in proxy.requests[1:])  # pinned to one version
    if not proxy.reset:
        # After a FIN the bytes that arrived are kept, so every resume starts further on. (An RST
        # may discard them, and a resume from byte 0 carries no Range header.)
        starts = [int(r.rstrip("-")) for r in ranges[1:]]
        assert 0 < starts[0] and starts == sorted(set(starts)) and starts[-1] < len(data)


def test_download_from_offset_resumes_from_the_right_byte(s3: S3Backend, proxy: CuttingProxy, policy: RetryPolicy) -> None:
    data = payload(2 * 1024 * 1024, seed=15)
    s3.save("vol/a", [data])
    proxy.cut(300_000)
    reader = reader_through(proxy, s3, policy)
    with reader.open("vol/a", 1000) as stream:
        assert stream.read() == data[1000:]
    assert proxy.ranges()[0] == "1000-"


def test_download_gives_up_after_repeated_breaks(s3: S3Backend, proxy: CuttingProxy, policy: RetryPolicy) -> None:
    s3.save("vol/a", [payload(2 * 1024 * 1024, seed=16)])
    proxy.cut(500_000, *[40] * 20)  # then every reconnection dies inside the answer's headers
    reader = reader_through(proxy, s3, policy)
    with reader.open("vol/a") as stream, pytest.raises(TransientError) as caught:
        stream.read()
    assert_clean_line(caught.value, reader)
    assert len(proxy.requests) == ATTEMPTS  # the first connection plus ATTEMPTS - 1 reconnections


def test_download_refuses_to_splice_a_replaced_object(s3: S3Backend, proxy: CuttingProxy, policy: RetryPolicy) -> None:
    s3.save("vol/a", [payload(2 * 1024 * 1024, seed=17)])
    proxy.cut(500_000)
    reader = reader_through(proxy, s3, policy)
    with reader.open("vol/a") as stream:
        s3.save("vol/a", [payload(2 * 1024 * 1024, seed=18)])  # replaced while being read
        with pytest.raises(PermanentError) as caught:
            stream.read()
    assert str(caught.value) == f"{reader.url}: vol/a: object changed while it was being read"


def test_resuming_reader_passes_other_errors_through() -> None:
    class Broken:
        def readinto(self, _buffer):
            raise ValueError("a bug, not a network problem")

        def close(self):
            pass

    reader = ResumingReader(lambda pos: Broken(), policy=RetryPolicy(sleep=lambda _s: None),
                            classify=lambda exc: None, size=10)
    with pytest.raises(ValueError):
        reader.read(5)
    assert reader.resumes == 0


# -- error lines -----------------------------------------------------------------------------


def test_missing_bucket_error_line(s3_http) -> None:
    backend = S3Backend.from_url("s3://volsafe-no-such-bucket/some/prefix", retry=RetryPolicy(attempts=1))
    operations = {
        "save": lambda: backend.save("k", iter([b"data"])),
        "open": lambda: backend.open("k"),
        "stat": lambda: backend.stat("k"),
        "list": lambda: list(backend.list()),
        "remove": lambda: backend.remove("k"),
    }
    for name, operation in operations.items():
        with pytest.raises(PermanentError) as caught:
            operation()
        assert str(caught.value) == "s3://volsafe-no-such-bucket/some/prefix: bucket does not exist", name
        assert_clean_line(caught.value, backend)


def closed_port() -> int:
    """Return a port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_error_line(aws_env) -> None:
    port = closed_port()
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    backend = S3Backend("bkt", "p", endpoint_url=f"http://127.0.0.1:{port}", access_key_id="AKIAEXAMPLE",
                        secret_access_key=secret, retry=RetryPolicy(attempts=2, sleep=lambda _s: None))
    for operation in (lambda: backend.stat("k"), lambda: backend.save("k", [b"x"]), lambda: list(backend.list())):
        with pytest.raises(TransientError) as caught:
            operation()
        assert str(caught.value) == f"s3://bkt/p: cannot connect to endpoint http://127.0.0.1:{port}: Connection refused"
        assert_clean_line(caught.value, backend, secret)


def test_unreachable_endpoint_is_retried_by_the_wrapper(aws_env, sleeps: list[float], policy: RetryPolicy) -> None:
    backend = with_retries(S3Backend("bkt", endpoint_url=f"http://127.0.0.1:{closed_port()}"), policy)
    with pytest.raises(TransientError):
        backend.stat("k")
    assert len(sleeps) == ATTEMPTS - 1


def test_no_credentials_error_line(s3_http, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    backend = S3Backend.from_url("s3://bkt/p")
    with pytest.raises(PermanentError) as caught:
        backend.stat("k")
    assert str(caught.value).startswith("s3://bkt/p: no AWS credentials found (")
    assert_clean_line(caught.value, backend)


def test_wrong_credentials_error_lines(s3_inprocess) -> None:
    """moto checks signatures only in-process with authentication switched on. (Real S3 answers
    a HEAD with a bare 403, so there stat reports "access denied (check credentials)".)"""

    @set_initial_no_auth_action_count(4)  # the IAM set-up and the bucket go through unchecked
    def run() -> None:
        iam = boto3.client("iam")
        iam.create_user(UserName="backup")
        iam.put_user_policy(UserName="backup", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="backup")["AccessKey"]
        good = S3Backend(unique_bucket_name(), "p", access_key_id=key["AccessKeyId"],
                         secret_access_key=key["SecretAccessKey"])
        good.client.create_bucket(Bucket=good.bucket)
        good.save("k", [b"1"])  # the real key works

        cases = {
            (key["AccessKeyId"], "wrong-secret-0123456789abcdef"):
                "request signature does not match (check the secret access key)",
            ("AKIANOSUCHKEY0000000", "wrong-secret-0123456789abcdef"):
                "access key id not recognised (check credentials)",
        }
        for (key_id, secret), hint in cases.items():
            bad = S3Backend(good.bucket, "p", access_key_id=key_id, secret_access_key=secret)
            for operation in (lambda bad=bad: bad.stat("k"), lambda bad=bad: bad.save("k", [b"2"]), lambda bad=bad: list(bad.list())):
                with pytest.raises(PermanentError) as caught:
                    operation()
                assert str(caught.value) == f"{bad.url}: {hint}"
                assert_clean_line(caught.value, bad, secret, key["SecretAccessKey"])

    run()


def test_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(PermanentError) as caught:
        S3Backend.from_url(f"s3://AKIAEXAMPLE:{SECRET}@bucket/p")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [("s3://bkt", ("bkt", "", "s3://bkt")), ("s3://bkt/a/b/", ("bkt", "a/b", "s3://bkt/a/b")),
     ("s3://bkt//a", ("bkt", "a", "s3://bkt/a"))],
)
def test_from_url(aws_env, url: str, expected: tuple[str, str, str]) -> None:
    backend = S3Backend.from_url(url)
    assert (backend.bucket, backend.prefix, backend.url) == expected
    via_registry = open_backend(url)  # wrapped in the default retry policy
    assert isinstance(via_registry, RetryingBackend) and isinstance(via_registry.inner, S3Backend)
    assert via_registry.url == expected[2]


@pytest.mark.parametrize(
    ("url", "settings"),
    [("s3:///nobucket", {}), ("s3://bkt/a/../b", {}), ("s3://bkt?region=x", {}), ("s3://bkt", {"part_size": 1024}),
     ("s3://bkt", {"concurrency": 0}), ("s3://bkt", {"sse": "rot13"}), ("s3://bkt", {"sse_kms_key_id": "k"}),
     ("s3://bkt", {"access_key_id": "AKIA"}), ("s3://bkt", {"profile": "volsafe-no-such-profile"})],
)
def test_bad_settings_are_refused(aws_env, url: str, settings: dict) -> None:
    with pytest.raises(PermanentError) as caught:
        S3Backend.from_url(url, **settings)
    assert "\n" not in str(caught.value)


# -- the retry wrapper -----------------------------------------------------------------------


class Flaky(LocalBackend):
    """A LocalBackend whose listed methods fail with TransientError the first ``times`` calls;
    ``after_work`` makes the failure come after the real work was done (a lost answer)."""

    def __init__(self, root, times: int, *methods: str, after_work: bool = False):
        super().__init__(root)
        self.calls: dict[str, int] = {}
        self._failures = {name: times for name in methods}
        self._after_work = after_work

    def _maybe_fail(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self._failures.get(name, 0) > 0:
            self._failures[name] -= 1
            raise TransientError(f"{self.url}: injected failure of {name}")

    def save(self, key, chunks):
        if self._after_work:
            size = super().save(key, chunks)
            self._maybe_fail("save")
            return size
        data = b"".join(chunks)  # consume the input before failing, as a real upload would
        self._maybe_fail("save")
        return super().save(key, [data])

    def stat(self, key):
        self._maybe_fail("stat")
        return super().stat(key)

    def remove(self, key):
        if self._after_work:
            super().remove(key)
            self._maybe_fail("remove")
            return
        self._maybe_fail("remove")
        super().remove(key)

    def list(self, prefix=""):
        for n, info in enumerate(super().list(prefix)):
            if n == 2:
                self._maybe_fail("list")
            yield info


def test_policy_delays_grow_exponentially_with_bounded_jitter() -> None:
    fixed = RetryPolicy(base_delay=0.5, max_delay=3, multiplier=2, jitter=0)
    assert [fixed.delay(n) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]
    assert RetryPolicy(base_delay=1, jitter=0.5, rand=lambda: 1.0).delay(1) == 0.5
    assert RetryPolicy(base_delay=1, jitter=0.5, rand=lambda: 0.0).delay(1) == 1


def test_policy_retries_transient_errors_only(sleeps: list[float], policy: RetryPolicy) -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("x: try again")
        return "done"

    assert policy.call(flaky) == "done" and len(sleeps) == 2

    def permanent() -> None:
        calls.append(1)
        raise PermanentError("x: no")

    calls.clear()
    with pytest.raises(PermanentError):
        policy.call(permanent)
    assert len(calls) == 1

    def always() -> None:
        calls.append(1)
        raise TransientError("x: still down")

    calls.clear()
    with pytest.raises(TransientError):
        policy.call(always)
    assert len(calls) == ATTEMPTS


def test_wrapper_retries_stat(tmp_path, policy: RetryPolicy) -> None:
    inner = Flaky(tmp_path, 2, "stat")
    inner.save("k", [b"12"])
    assert RetryingBackend(inner, policy).stat("k").size == 2
    assert inner.calls["stat"] == 3


@pytest.mark.parametrize("chunks", [b"payload", bytearray(b"payload"), [b"pay", b"load"]], ids=["bytes", "bytearray", "list"])
def test_wrapper_replays_replayable_saves(tmp_path, policy: RetryPolicy, chunks) -> None:
    inner = Flaky(tmp_path, 2, "save")
    assert RetryingBackend(inner, policy).save("k", chunks) == 7
    assert inner.calls["save"] == 3
    assert read_all(inner, "k") == b"payload"


def test_wrapper_does_not_replay_an_iterator(tmp_path, policy: RetryPolicy) -> None:
    inner = Flaky(tmp_path, 1, "save")
    with pytest.raises(TransientError):
        RetryingBackend(inner, policy).save("k", iter([b"payload"]))
    assert inner.calls["save"] == 1


def test_wrapper_resumes_a_listing_without_duplicates(tmp_path, policy: RetryPolicy) -> None:
    inner = Flaky(tmp_path, 2, "list")
    for n in range(5):
        inner.save(f"k{n}", [b"x"])
    keys = [info.key for info in RetryingBackend(inner, policy).list()]
    assert sorted(keys) == [f"k{n}" for n in range(5)]
    assert inner.calls["list"] == 3


def test_wrapper_treats_a_lost_remove_answer_as_success(tmp_path, policy: RetryPolicy) -> None:
    inner = Flaky(tmp_path, 1, "remove", after_work=True)
    inner.save("k", [b"x"])
    wrapped = RetryingBackend(inner, policy)
    wrapped.remove("k")  # deleted, answer lost, the retry finds nothing: still a success
    with pytest.raises(NotFound):
        wrapped.remove("k")  # absent from the start: NotFound


def test_with_retries_wraps_once(tmp_path) -> None:
    backend = LocalBackend(tmp_path)
    wrapped = with_retries(backend)
    assert isinstance(wrapped, RetryingBackend) and wrapped.inner is backend
    assert with_retries(wrapped) is wrapped
    rewrapped = with_retries(wrapped, RetryPolicy(attempts=2))
    assert rewrapped.inner is backend and rewrapped.policy.attempts == 2
    assert wrapped.url == backend.url


def test_wrapper_passes_backend_errors_through(tmp_path, policy: RetryPolicy, sleeps) -> None:
    wrapped = RetryingBackend(LocalBackend(tmp_path), policy)
    with pytest.raises(NotFound):
        wrapped.open("absent")
    with pytest.raises(PermanentError):
        wrapped.stat("../x")
    assert sleeps == []
