"""A backend that keeps objects in an S3 bucket, on AWS or on any S3-compatible store.

Credentials, region and endpoint come from the standard AWS chain (environment, shared config and
credentials files, SSO, container and instance roles) unless given explicitly. botocore (>= 1.31,
i.e. boto3 >= 1.28) honours ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` and ``endpoint_url`` in
the shared config file itself, which is how an S3-compatible store is chosen without settings.

Retries: botocore's own retries are switched off (one attempt per request); see
``storage_backends.retry`` for why. The backend retries only what cannot be replayed from outside:
each part of a streaming upload, the small single-request upload, completing/aborting a multipart
upload, and reopening a download that broke midway. Wrap the backend in ``RetryingBackend``
(``with_retries``) to retry stat/list/remove/open too.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from typing import Any, BinaryIO, Callable, Iterable, Iterator, TypeVar
from urllib.parse import urlsplit

import botocore.session
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    ConnectionError as BotoConnectionError,
    CredentialRetrievalError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    SSLError,
)

from storage_backends.base import (
    Backend,
    BackendError,
    NotFound,
    ObjectInfo,
    PermanentError,
    TransientError,
    check_key,
)
from storage_backends.retry import ResumingReader, RetryPolicy

log = logging.getLogger("volsafe.storage.s3")

T = TypeVar("T")

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000  # S3's limit on the parts of one upload
MAX_OBJECT_SIZE = 5 * 1024 * 1024 * MiB  # S3's largest object, 5 TiB
DEFAULT_CONCURRENCY = 4
SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
READ_BUFFER = 1 * MiB

# Error codes that S3 (or a compatible store) uses for "try again later".
_TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeoutException",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    "BadDigest",
    "IncompleteBody",
}

# Error codes that mean the credentials are wrong, with the one-line hint shown to the user.
_CREDENTIAL_HINTS = {
    "AccessDenied": "access denied (check credentials)",
    "403": "access denied (check credentials)",
    "Forbidden": "access denied (check credentials)",
    "AllAccessDisabled": "access denied (check credentials)",
    "InvalidAccessKeyId": "access key id not recognised (check credentials)",
    "SignatureDoesNotMatch": "request signature does not match (check the secret access key)",
    "ExpiredToken": "credentials have expired (refresh the session token)",
    "InvalidToken": "session token is invalid (check credentials)",
    "TokenRefreshRequired": "credentials have expired (refresh the session token)",
}

_NO_CREDENTIALS = (
    "no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
    "choose a profile with AWS_PROFILE, or run with an instance role)"
)


def _error_fields(exc: ClientError) -> tuple[str, int, str]:
    """Return (code, HTTP status, message) of a ClientError; missing parts are "" or 0."""
    error = exc.response.get("Error", {}) or {}
    status = (exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode", 0) or 0
    return str(error.get("Code", "")), int(status), str(error.get("Message", ""))


def _error_code(err: BaseException) -> str:
    """Return the S3 error code behind a BackendError raised by this module, or ""."""
    cause = err.__cause__
    return _error_fields(cause)[0] if isinstance(cause, ClientError) else ""


def _root_reason(exc: BaseException) -> str:
    """Return the innermost OS-level reason of a connection error, e.g. "Connection refused"."""
    seen: set[int] = set()
    current: BaseException | None = exc
    reason = str(exc)
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            reason = current.strerror
        kwargs = getattr(current, "kwargs", None)
        inner = kwargs.get("error") if isinstance(kwargs, dict) else None
        current = inner if isinstance(inner, BaseException) else (current.__cause__ or current.__context__)
    return reason


_loader_lock = threading.Lock()
_shared_loader: Any = None


def _new_session(profile: str | None) -> botocore.session.Session:
    """Return a fresh botocore session (so the credential chain and config are read anew) that
    shares one model loader per process: parsing the S3 model takes ~0.15 s per session otherwise."""
    global _shared_loader
    session = botocore.session.Session(profile=profile)
    with _loader_lock:
        if _shared_loader is None:
            _shared_loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _shared_loader)
    return session


def _utc(moment: datetime | None) -> datetime | None:
    """Return ``moment`` in UTC (botocore hands out dateutil zones; LocalBackend uses UTC)."""
    return moment.astimezone(timezone.utc) if moment is not None else None


def _parse_s3_url(url: str) -> tuple[str, str]:
    """Return (bucket, prefix) of ``s3://BUCKET[/PREFIX]``. Raises PermanentError."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise PermanentError(f"{url}: not an s3:// URL")
    if "@" in parts.netloc:
        # Never echo the URL here: what precedes "@" is probably a secret.
        raise PermanentError("s3:// URLs must not contain credentials; use the AWS credential chain")
    if parts.query or parts.fragment:
        raise PermanentError(f"s3://{parts.netloc}{parts.path}: query strings are not supported in s3:// URLs")
    if not parts.netloc:
        raise PermanentError(f"{url}: no bucket name (use s3://BUCKET[/PREFIX])")
    return parts.netloc, parts.path


def parts_per_size(first: int) -> int:
    """Return how many parts an upload keeps each part size: the first that many parts are ``first``
    bytes, the next that many twice that, and so on (never above MAX_PART_SIZE; see part_size).

    It is the largest such count whose MAX_PARTS parts still hold MAX_OBJECT_SIZE bytes: parts
    stay small as long as they can, and any object up to S3's limit fits however far the stream
    outruns the first size. (1 if even that cannot reach MAX_OBJECT_SIZE.)
    """
    max_parts, max_object = MAX_PARTS, MAX_OBJECT_SIZE

    def capacity(step: int) -> int:
        total, number, size = 0, 0, first
        while number < max_parts:
            count = min(step, max_parts - number)
            total += count * size
            number += count
            size = min(size * 2, MAX_PART_SIZE)
        return total

    low, high = 1, max_parts  # capacity falls as the step grows: the largest step that holds max_object
    while low < high:
        middle = (low + high + 1) // 2
        if capacity(middle) >= max_object:
            low = middle
        else:
            high = middle - 1
    return low


def part_size(number: int, first: int, step: int) -> int:
    """Return the size of part ``number`` (from 1) of an upload whose sizes double every ``step`` parts."""
    return min(MAX_PART_SIZE, first << min((number - 1) // step, 32))


class S3Backend(Backend):
    """Objects live in ``bucket`` under ``prefix/``; keys map to S3 keys one to one.

    ``save`` streams: it cuts the chunks into parts of ``part_size`` bytes and uploads up to
    ``concurrency`` of them at once. S3 allows MAX_PARTS parts, so a long stream's parts grow: the
    size doubles every ``parts_per_size(part_size)`` parts (about the first 1,000-1,200 at the
    default 16 MiB, so up to about 16 GiB nothing changes), and any object up to S3's 5 TiB fits.
    Larger parts go up fewer at a time, so memory stays within ``part_size * (concurrency + 1)``, or
    twice the largest part when that is more (see _StreamingUpload). Objects smaller than one part
    go up in a single PUT. ``retry`` governs the retries done inside (see the module docstring).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        profile: str | None = None,
        path_style: bool = False,
        storage_class: str | None = None,
        sse: str | None = None,
        sse_kms_key_id: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        retry: RetryPolicy | None = None,
        client: Any = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._secrets = tuple(s for s in (secret_access_key, session_token) if s)
        if not bucket:
            raise PermanentError(f"{self.url}: no bucket name")
        if self.prefix:
            try:
                check_key(self.prefix)
            except PermanentError:
                raise PermanentError(f"{self.url}: invalid prefix {self.prefix!r}") from None
        if (access_key_id is None) != (secret_access_key is None):
            raise PermanentError(f"{self.url}: give both access_key_id and secret_access_key, or neither")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise PermanentError(f"{self.url}: part_size must be between 5 MiB and 5 GiB, not {part_size}")
        if not 1 <= concurrency <= 64:
            raise PermanentError(f"{self.url}: concurrency must be between 1 and 64, not {concurrency}")
        self.part_size = part_size
        self.parts_per_size = parts_per_size(part_size)
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self._write_args = self._object_settings(storage_class, sse, sse_kms_key_id)
        self.client = client or self._make_client(
            region=region,
            endpoint_url=endpoint_url,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            profile=profile,
            path_style=path_style,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        # Same default as s3transfer: with botocore's "when_supported" integrity protection, ask for
        # CRC32 part checksums and send them back on completion. "when_required" (for stores that
        # reject the new checksum headers, AWS_REQUEST_CHECKSUM_CALCULATION) turns this off.
        calculation = getattr(self.client.meta.config, "request_checksum_calculation", None)
        self._checksum = "CRC32" if calculation == "when_supported" else None
        self._bucket_seen = False

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> "S3Backend":
        """Return the backend for ``s3://BUCKET[/PREFIX]``; ``settings`` as for the constructor.

        Raises PermanentError for a malformed URL or invalid settings.
        """
        bucket, prefix = _parse_s3_url(url)
        return cls(bucket, prefix, **settings)

    # -- set-up ------------------------------------------------------------------------------

    def _object_settings(self, storage_class: str | None, sse: str | None, kms_key: str | None) -> dict:
        """Return the extra PutObject/CreateMultipartUpload arguments. Raises PermanentError."""
        args: dict[str, str] = {}
        if storage_class:
            args["StorageClass"] = storage_class
        if sse:
            if sse not in SSE_MODES:
                raise PermanentError(f"{self.url}: sse must be one of {', '.join(SSE_MODES)}, not {sse!r}")
            args["ServerSideEncryption"] = sse
        if kms_key:
            if not (sse or "").startswith("aws:kms"):
                raise PermanentError(f"{self.url}: sse_kms_key_id needs sse='aws:kms'")
            args["SSEKMSKeyId"] = kms_key
        return args

    def _make_client(self, *, region, endpoint_url, access_key_id, secret_access_key, session_token,
                     profile, path_style, connect_timeout, read_timeout) -> Any:
        """Return a botocore S3 client for these settings. Raises PermanentError."""
        config = Config(
            retries={"mode": "standard", "total_max_attempts": 1},  # retries are ours, see retry.py
            max_pool_connections=max(10, self.concurrency + 2),
            s3={"addressing_style": "path"} if path_style else {},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,  # a stalled download is resumed after this long
            tcp_keepalive=True,
            user_agent_extra="volsafe",
        )
        try:
            return _new_session(profile).create_client(
                "s3",
                region_name=region,
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                aws_session_token=session_token,
                config=config,
            )
        except (BotoCoreError, ValueError) as exc:
            raise PermanentError(self._scrub(f"{self.url}: invalid S3 settings: {exc}")) from None

    # -- helpers -----------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        """Return the S3 key for an object key. Raises PermanentError for an unsafe key."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @property
    def _key_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    @property
    def endpoint_url(self) -> str:
        """The endpoint requests go to, e.g. ``https://s3.amazonaws.com``."""
        return self.client.meta.endpoint_url

    def _scrub(self, message: str) -> str:
        """Return ``message`` with any configured secret masked (S3 never echoes one; be sure)."""
        for secret in self._secrets + tuple(filter(None, [os.environ.get("AWS_SECRET_ACCESS_KEY")])):
            message = message.replace(secret, "***")
        return message

    def _call(self, action: str, key: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """Return ``fn(**kwargs)`` (one S3 request). Raises the matching BackendError."""
        try:
            result = fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, action, key) from exc
        self._bucket_seen = True
        return result

    def _error(self, exc: Exception, action: str, key: str) -> BackendError:
        """Return the BackendError for a botocore exception: one line, naming this backend, with
        no secret in it."""
        kind, detail = self._classify(exc, action, key)
        return kind(" ".join(self._scrub(f"{self.url}: {detail}").split()))

    def _classify(self, exc: Exception, action: str, key: str) -> tuple[type[BackendError], str]:
        """Return the error class and the message (after "URL: ") for a botocore exception."""
        what = f"cannot {action} {key}" if key else f"cannot {action}"
        if isinstance(exc, ClientError):
            return self._classify_answer(exc, what, key)
        if isinstance(exc, NoCredentialsError):
            return PermanentError, _NO_CREDENTIALS
        if isinstance(exc, (PartialCredentialsError, CredentialRetrievalError)):
            return PermanentError, f"cannot get AWS credentials: {exc}"
        if isinstance(exc, SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return PermanentError, f"TLS certificate of {self.endpoint_url} is not trusted"
        if isinstance(exc, BotoConnectionError):
            return TransientError, f"cannot connect to endpoint {self.endpoint_url}: {_root_reason(exc)}"
        if isinstance(exc, (HTTPClientError, IncompleteReadError, ChecksumError, FlexibleChecksumError)):
            return TransientError, f"{what}: connection to {self.endpoint_url} broken: {_root_reason(exc)}"
        if isinstance(exc, ParamValidationError):
            return PermanentError, f"{what}: invalid request: {exc}"
        return PermanentError, f"{what}: {exc}"

    def _classify_answer(self, exc: ClientError, what: str, key: str) -> tuple[type[BackendError], str]:
        """Return the error class and message for an error answer from S3."""
        code, status, message = _error_fields(exc)
        if code == "NoSuchBucket":
            return PermanentError, "bucket does not exist"
        if code in ("NoSuchKey", "NotFound") or (status == 404 and code in ("404", "")):
            return NotFound, f"{key}: no such object"
        if code in _CREDENTIAL_HINTS:
            return PermanentError, _CREDENTIAL_HINTS[code]
        if code == "PreconditionFailed":
            return PermanentError, f"{key}: object changed while it was being read"
        if code == "NoSuchUpload":
            return PermanentError, f"{what}: the multipart upload no longer exists"
        detail = f"{code}: {message}" if message else code or f"HTTP {status}"
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientError, f"{what}: {detail} (HTTP {status})"
        return PermanentError, f"{what}: {detail}"

    def _not_found_or_no_bucket(self, err: NotFound) -> BackendError:
        """Return ``err``, or a PermanentError if the 404 came from a missing bucket.

        HEAD answers carry no error code, so a missing bucket looks like a missing key there.
        """
        if self._bucket_seen:
            return err
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _error_fields(exc)[1] == 404:
                return PermanentError(f"{self.url}: bucket does not exist")
        except BotoCoreError:
            pass  # the original answer stands
        else:
            self._bucket_seen = True
        return err

    def _head(self, key: str, full_key: str) -> dict:
        """Return the HeadObject answer. Raises NotFound, or PermanentError for a missing bucket."""
        try:
            return self._call("stat", key, self.client.head_object, Bucket=self.bucket, Key=full_key)
        except NotFound as err:
            raise self._not_found_or_no_bucket(err) from err.__cause__

    # -- the Backend interface ---------------------------------------------------------------

    def save(self, key: str, chunks: Iterable[bytes]) -> int:
        """Stream ``chunks`` to ``key``; return the bytes stored.

        On any exception, the chunk iterator's included, a started multipart upload is aborted before
        the exception propagates, so no partial object or incomplete upload is left and an older
        object under ``key`` stays as it was.
        """
        return _StreamingUpload(self, key, self._key(key)).run(chunks)

    def open(self, key: str, offset: int = 0) -> BinaryIO:
        """Return a buffered stream of the object from ``offset`` on; a connection that breaks while
        reading is resumed with a ranged GET of the same object version. Raises NotFound."""
        full_key = self._key(key)
        if offset < 0:
            raise PermanentError(f"{self.url}: {key}: negative offset {offset}")
        first = self._get(key, full_key, offset, etag=None)
        if first is None:  # offset at or past the end: S3 answers 416, a file reads as empty
            self._head(key, full_key)
            return io.BytesIO(b"")
        etag = first.get("ETag")
        size = offset + int(first["ContentLength"])

        def open_at(pos: int) -> BinaryIO:
            answer = self._get(key, full_key, pos, etag=etag)
            if answer is None:
                raise TransientError(f"{self.url}: cannot read {key}: the object got shorter while being read")
            return answer["Body"]

        reader = ResumingReader(
            open_at,
            policy=self.retry,
            classify=lambda exc: self._read_error(exc, key),
            start=offset,
            size=size,
            first=first["Body"],
            name=f"{self.url}: cannot read {key}",
        )
        return io.BufferedReader(reader, buffer_size=READ_BUFFER)

    def _get(self, key: str, full_key: str, offset: int, etag: str | None) -> dict | None:
        """Return the GetObject answer from ``offset`` (pinned to ``etag`` if given), or None if
        ``offset`` is at or past the end. Raises NotFound and other BackendErrors."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": full_key}
        if offset:
            args["Range"] = f"bytes={offset}-"
        if etag:
            args["IfMatch"] = etag  # resume only the version we started reading
        try:
            return self._call("read", key, self.client.get_object, **args)
        except NotFound as err:
            raise self._not_found_or_no_bucket(err) from err.__cause__
        except PermanentError as err:
            if _error_code(err) == "InvalidRange":
                return None
            raise

    def _read_error(self, exc: BaseException, key: str) -> BackendError | None:
        """Classify an exception raised while reading a GET body (for ResumingReader)."""
        if isinstance(exc, (ClientError, BotoCoreError)):
            return self._error(exc, "read", key)
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
            return TransientError(f"{self.url}: cannot read {key}: connection broken: {_root_reason(exc)}")
        return None

    def stat(self, key: str) -> ObjectInfo:
        """Return size and modification time. Raises NotFound."""
        answer = self._head(key, self._key(key))
        return ObjectInfo(key, int(answer["ContentLength"]), _utc(answer.get("LastModified")))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the complete objects whose key starts with ``prefix`` (keys relative to the
        backend's prefix). Unfinished multipart uploads are never listed by S3."""
        check_key(prefix, allow_empty=True)
        root = self._key_prefix
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root + prefix)
        try:
            for page in pages:
                self._bucket_seen = True
                for entry in page.get("Contents", ()):
                    key = entry["Key"][len(root):]
                    if self._listable(key):
                        yield ObjectInfo(key, int(entry["Size"]), _utc(entry.get("LastModified")))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "list", prefix) from exc

    @staticmethod
    def _listable(key: str) -> bool:
        """Return whether a listed key is one this backend could have written (skips "folder/"
        markers made by consoles and keys such as "a//b" that no valid key maps to)."""
        try:
            check_key(key)
        except PermanentError:
            return False
        return True

    def remove(self, key: str) -> None:
        """Delete the object. Raises NotFound if it is absent (S3's DELETE would not tell)."""
        full_key = self._key(key)
        self._head(key, full_key)
        self._call("remove", key, self.client.delete_object, Bucket=self.bucket, Key=full_key)

    def close(self) -> None:
        """Close the client's connection pool."""
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


class _Stopped(Exception):
    """Raised in a part-upload thread when the upload is being abandoned."""


class _StreamingUpload:
    """One ``S3Backend.save``: cuts the chunk stream into parts and uploads them in parallel.

    Parts grow as the stream goes on (part_size). While one part fills up, parts are in flight
    (submitted, not finished) up to ``concurrency`` of them and up to the memory budget
    ``part_size * (concurrency + 1)`` with the filling one, but always at least one: memory stays
    within the larger of that budget and twice the largest part. Nothing is started on S3 until a
    first full part exists and more data follows; a smaller object goes up with one PutObject.
    """

    def __init__(self, backend: S3Backend, key: str, full_key: str):
        self.backend = backend
        self.key = key
        self.full_key = full_key
        self.upload_id: str | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.in_flight: set[Future] = set()
        self.parts: list[dict] = []
        self.next_part = 1
        self.stopping = threading.Event()
        self.budget = backend.part_size * (backend.concurrency + 1)

    def _part_size(self, number: int) -> int:
        return part_size(number, self.backend.part_size, self.backend.parts_per_size)

    def run(self, chunks: Iterable[bytes]) -> int:
        """Upload everything; return the byte count. On any exception abort, then re-raise."""
        try:
            return self._upload(chunks)
        except BaseException as exc:
            self._abandon(exc)
            raise
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)

    def _upload(self, chunks: Iterable[bytes]) -> int:
        part_size = self._part_size(self.next_part)
        buffer = bytearray()
        total = 0
        for chunk in chunks:
            # Explicitly released: a producer may reuse its bytearray once we ask for the next chunk.
            with memoryview(chunk).cast("B") as view:
                pos = 0
                while pos < len(view):
                    if len(buffer) == part_size:  # full, and more data follows: ship it
                        self._send_part(buffer)
                        buffer = bytearray()
                        part_size = self._part_size(self.next_part)
                    end = min(len(view), pos + part_size - len(buffer))
                    buffer += view[pos:end]
                    pos = end
                total += len(view)
        if self.upload_id is None:
            self._put(buffer)
        else:
            self._send_part(buffer)
            self._complete()
        return total

    # -- requests ----------------------------------------------------------------------------

    def _request(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """Return one S3 request's answer, retried on TransientError by the backend's policy."""
        b = self.backend
        return b.retry.call(b._call, "write", self.key, fn, Bucket=b.bucket, Key=self.full_key, **kwargs)

    def _put(self, body: bytearray) -> None:
        self._request(self.backend.client.put_object, Body=body, **self.backend._write_args)

    def _start(self) -> None:
        b = self.backend
        extra = dict(b._write_args)
        if b._checksum:
            extra["ChecksumAlgorithm"] = b._checksum
        self.upload_id = self._request(b.client.create_multipart_upload, **extra)["UploadId"]
        self.pool = ThreadPoolExecutor(max_workers=b.concurrency, thread_name_prefix="volsafe-s3-part")

    def _send_part(self, body: bytearray) -> None:
        """Queue ``body`` as the next part, first waiting for a free upload slot."""
        if self.upload_id is None:
            self._start()
        if self.next_part > MAX_PARTS:
            raise PermanentError(
                f"{self.backend.url}: cannot write {self.key}: larger than S3's largest object "
                f"({MAX_OBJECT_SIZE // (1024 * 1024 * MiB)} TiB in {MAX_PARTS} parts)"
            )
        # In flight with this part: as many as fit in the budget beside the next part filling up.
        filling = self._part_size(self.next_part + 1)
        in_flight = max(1, min(self.backend.concurrency, (self.budget - filling) // len(body)))
        self._wait_until(in_flight - 1)
        assert self.pool is not None
        self.in_flight.add(self.pool.submit(self._upload_part, self.next_part, body))
        self.next_part += 1

    def _upload_part(self, number: int, body: bytearray) -> dict:
        """Upload one part (in a worker thread); return its entry for CompleteMultipartUpload."""
        b = self.backend
        extra = {"ChecksumAlgorithm": b._checksum} if b._checksum else {}

        def attempt() -> dict:
            if self.stopping.is_set():
                raise _Stopped()
            return b._call(
                "write", self.key, b.client.upload_part, Bucket=b.bucket, Key=self.full_key,
                UploadId=self.upload_id, PartNumber=number, Body=body, **extra,
            )

        answer = b.retry.call(attempt)
        part = {"PartNumber": number, "ETag": answer["ETag"]}
        if b._checksum and f"Checksum{b._checksum}" in answer:
            part[f"Checksum{b._checksum}"] = answer[f"Checksum{b._checksum}"]
        return part

    def _wait_until(self, limit: int) -> None:
        """Wait until at most ``limit`` parts are in flight; record finished ones. Raises the first
        part failure."""
        while True:
            for future in [f for f in self.in_flight if f.done()]:
                self.in_flight.discard(future)
                self.parts.append(future.result())
            if len(self.in_flight) <= limit:
                return
            wait(self.in_flight, return_when=FIRST_COMPLETED)

    def _complete(self) -> None:
        self._wait_until(0)
        parts = sorted(self.parts, key=lambda p: p["PartNumber"])
        b = self.backend
        tries = 0

        def attempt() -> None:
            nonlocal tries
            tries += 1
            try:
                b._call(
                    "write", self.key, b.client.complete_multipart_upload, Bucket=b.bucket,
                    Key=self.full_key, UploadId=self.upload_id, MultipartUpload={"Parts": parts},
                )
            except PermanentError as err:
                # A retry after a lost answer finds the upload gone because the first try worked.
                if tries > 1 and _error_code(err) == "NoSuchUpload" and self._stored_matches(parts):
                    return
                raise

        b.retry.call(attempt)
        self.upload_id = None  # completed: nothing left to abort

    def _stored_matches(self, parts: list[dict]) -> bool:
        """Return whether the stored object is the one these parts make (by its multipart ETag)."""
        try:
            digests = b"".join(bytes.fromhex(p["ETag"].strip('"')) for p in parts)
            answer = self.backend.client.head_object(Bucket=self.backend.bucket, Key=self.full_key)
        except (ValueError, ClientError, BotoCoreError):
            return False
        return answer.get("ETag", "").strip('"') == f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"

    def _abandon(self, exc: BaseException) -> None:
        """Stop the part uploads and abort the multipart upload, so that nothing is left behind."""
        self.stopping.set()
        if self.pool is not None:
            # Let running part uploads end first: a part that lands after the abort would be kept.
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.upload_id is None:
            return
        b = self.backend
        try:
            self._request(b.client.abort_multipart_upload, UploadId=self.upload_id)
        except BaseException as err:  # noqa: BLE001 - the original exception matters more
            if isinstance(err, BackendError) and _error_code(err) == "NoSuchUpload":
                return
            note = (
                f"{b.url}: could not abort multipart upload {self.upload_id} of {self.key}: {err}; "
                "an AbortIncompleteMultipartUpload lifecycle rule will remove it"
            )
            log.error("%s", note)
            exc.add_note(note)
        else:
            log.info("%s: aborted the multipart upload of %s", b.url, self.key)


# -- the "s3" type: [backends.NAME] with type = "s3", and s3:// URLs -----------------------------
# (Imported here, after the class, so that this block is the module's whole declaration.)

from storage_backends.registry import BackendType, register  # noqa: E402
from storage_backends.settings import FLAG, TEXT, Setting, Text, WholeNumber  # noqa: E402


def _create(settings: dict[str, Any]) -> S3Backend:
    given = {k: v for k, v in settings.items() if v != ""}  # an empty string leaves a setting unset
    return S3Backend(given.pop("bucket", ""), **given)


def _check(settings: dict[str, Any]) -> Iterator[str]:
    if bool(settings.get("access_key_id")) != bool(settings.get("secret_access_key")):
        yield "give both access_key_id and secret_access_key, or neither"


register(
    BackendType(
        "s3",
        settings=(
            Setting("bucket", TEXT, "bucket name", required=True),
            Setting("prefix", TEXT, "key prefix inside the bucket", ""),
            Setting("region", TEXT, "AWS region"),
            Setting("endpoint_url", TEXT, "URL of an S3-compatible store"),
            Setting("access_key_id", TEXT, "access key id", secret=True),
            Setting("secret_access_key", TEXT, "secret access key", secret=True),
            Setting("session_token", TEXT, "session token of temporary credentials", secret=True),
            Setting("profile", TEXT, "profile from the AWS shared config files"),
            Setting("path_style", FLAG, "path-style addressing (MinIO and most self-hosted stores)", False),
            Setting("storage_class", TEXT, "S3 storage class, e.g. STANDARD_IA"),
            Setting("sse", Text(SSE_MODES), "server-side encryption"),
            Setting("sse_kms_key_id", TEXT, "KMS key for sse = aws:kms"),
            Setting("part_size", WholeNumber(MIN_PART_SIZE), "first part size of multipart uploads in bytes (5 MiB to 5 GiB); a long upload's parts grow from it", DEFAULT_PART_SIZE),
            Setting("concurrency", WholeNumber(1), "parts uploaded at once (1 to 64)", DEFAULT_CONCURRENCY),
        ),
        create=_create,
        schemes=("s3",),
        from_url=S3Backend.from_url,
        check=_check,
    )
)
