"""Client-side encryption in the age format (age-encryption.org/v1), streaming, through pyrage.

pyrage (Python bindings of rage, the Rust age implementation) encrypts and decrypts between two
file-like objects with bounded memory (measured: 15 MiB RSS for 1 GB, about 480 MB/s). Its calls
block, so each runs in a worker thread that is fed, or drained, through small bounded channels: the
rest of volsafe keeps working with iterators of chunks and readable streams.

Keys: recipients are age X25519 public keys (``age1…``) or SSH public keys (``ssh-ed25519``,
``ssh-rsa``); identities are age identity files (as ``age-keygen`` writes them) or unencrypted SSH
private keys. A ``Passphrase`` is both at once (age's scrypt recipient type, in ``age_scrypt``
because pyrage cannot stream it): it encrypts in place of recipients, never beside them, and sits in
the list of identities that decrypt. No key material is ever put in a message, a log line or a
manifest: recipients are recorded only by fingerprint, a passphrase only as "a passphrase".
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar, Iterable, Iterator

import pyrage

from backup.crypto import age_scrypt
from backup.crypto.age_scrypt import PassphraseError  # noqa: F401 - re-exported beside EncryptionError
from backup.errors import IntegrityError, VolsafeError
from backup.streams.channel import Channel, ChannelReader, ChannelWriter, Stopped

AGE_FORMAT = "age-encryption.org/v1"
HEAD_SIZE = 256 * 1024  # enough for the header and the first payload chunk: the key check reads this
_QUEUE_DEPTH = 8
PASSPHRASE_ENV = "VOLSAFE_PASSPHRASE"


class EncryptionError(VolsafeError):
    """A recipient or identity is malformed, or an archive cannot be decrypted with the given keys."""


@dataclass(frozen=True)
class Recipients:
    """Parsed recipients and their fingerprints (what the manifest records)."""

    keys: tuple
    fingerprints: tuple[str, ...]
    by_passphrase: ClassVar[bool] = False


class Passphrase(age_scrypt.Passphrase):
    """A passphrase as an encryption key (in place of Recipients) and as an identity."""

    fingerprints: tuple[str, ...] = ()  # a passphrase has nothing public to record
    by_passphrase: ClassVar[bool] = True


def read_passphrase(name: str, source: str) -> Passphrase:
    """Return the passphrase on the first line of file ``name`` (its line ending stripped).

    ``source`` names the setting it came from in messages. Raises EncryptionError for an unreadable
    file or an empty first line (never quoting the file's content).
    """
    try:
        data = Path(name).expanduser().read_bytes()
    except OSError as exc:
        raise EncryptionError(f"cannot read passphrase file {name} ({source}): {exc.strerror or exc}") from None
    secret = data.split(b"\n", 1)[0].removesuffix(b"\r")
    if not secret:
        raise EncryptionError(f"passphrase file {name} ({source}): its first line is empty")
    return Passphrase(secret, f"{source} {name}")


def passphrase_from_environment() -> Passphrase | None:
    """Return the passphrase in $VOLSAFE_PASSPHRASE, or None if it is unset or empty."""
    secret = os.fsencode(os.environ.get(PASSPHRASE_ENV, ""))
    return Passphrase(secret, PASSPHRASE_ENV) if secret else None


def one_kind(recipients: Recipients | None, passphrase: Passphrase | None) -> Recipients | Passphrase | None:
    """Return the key to encrypt with: ``recipients`` or ``passphrase`` (None if neither).

    Raises EncryptionError if both are given: age seals a file with a passphrase only when it is the
    sole recipient, so that no one else could have made the archive.
    """
    if recipients is not None and passphrase is not None:
        raise EncryptionError("encrypt with recipients or with a passphrase, not both: age does not mix them in one archive")
    return recipients if recipients is not None else passphrase


PASSPHRASE_SETTING = "[encryption] passphrase_file"


def configured_passphrase(config) -> Passphrase | None:
    """Return $VOLSAFE_PASSPHRASE's passphrase, else that of the config's passphrase_file; None if neither.

    Raises EncryptionError for an unreadable or empty passphrase file.
    """
    found = passphrase_from_environment()
    if found is None and config.passphrase_file:
        found = read_passphrase(config.passphrase_file, PASSPHRASE_SETTING)
    return found


def configured_key(config) -> Recipients | Passphrase | None:
    """Return the key that the environment and ``config``'s [encryption] table encrypt with; None
    for no encryption. Raises EncryptionError for a bad recipient or file, or for both kinds."""
    return one_kind(
        read_recipients(config.encryption_recipients, config.encryption_recipients_files),
        configured_passphrase(config),
    )


def configured_identities(config) -> list | None:
    """Return the keys that the environment and ``config`` decrypt with (identity files, and a
    passphrase); None if there are none. Raises EncryptionError for an unreadable file."""
    identities = read_identities(config.identity_files) if config.identity_files else []
    return decryption_keys(identities, configured_passphrase(config))


def decryption_keys(identities: list, passphrase: Passphrase | None) -> list | None:
    """Return ``identities`` and the passphrase (if any) as one list of keys; None if it is empty."""
    keys = identities + ([passphrase] if passphrase is not None else [])
    return keys or None


def fingerprint(recipient: str) -> str:
    """Return ``SHA256:…`` of a recipient: for SSH keys the fingerprint ``ssh-keygen -l`` prints, for
    age keys the same hash over the ``age1…`` text. Raises EncryptionError for an unreadable SSH key."""
    parts = recipient.split()
    if parts and parts[0].startswith("ssh-") and len(parts) >= 2:
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except ValueError:
            raise EncryptionError("invalid SSH public key in the recipients") from None
    else:
        blob = recipient.strip().encode()
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_recipients(lines: Iterable[str], source: str = "recipient") -> Recipients:
    """Return the recipients in ``lines`` (blank lines and ``#`` comments skipped).

    Raises EncryptionError naming the bad line's position (never its text beyond the key type).
    """
    keys, prints = [], []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            if text.startswith("age1"):
                keys.append(pyrage.x25519.Recipient.from_str(text))
            elif text.startswith("ssh-"):
                keys.append(pyrage.ssh.Recipient.from_str(text))
            else:
                raise ValueError
        except (ValueError, pyrage.RecipientError):
            raise EncryptionError(f"{source} {number}: not an age (age1…) or SSH (ssh-ed25519, ssh-rsa) public key") from None
        prints.append(fingerprint(text))
    if not keys:
        raise EncryptionError(f"{source}: no recipients given")
    return Recipients(tuple(keys), tuple(prints))


def read_recipients(values: Iterable[str], files: Iterable[str]) -> Recipients | None:
    """Return the recipients given on the command line and in recipients files; None if there are none.

    Raises EncryptionError for an unreadable file or a bad recipient.
    """
    lines = [(v, "--recipient") for v in values]
    for name in files:
        try:
            text = Path(name).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EncryptionError(f"cannot read recipients file {name}: {getattr(exc, 'strerror', None) or exc}") from None
        lines += [(line, f"recipients file {name}, line") for line in text.splitlines()]
    if not lines:
        return None
    keys: list = []
    prints: list[str] = []
    for line, source in lines:
        if line.strip() and not line.strip().startswith("#"):
            parsed = parse_recipients([line], source)
            keys += parsed.keys
            prints += parsed.fingerprints
    if not keys:
        raise EncryptionError("the recipients files hold no recipients")
    return Recipients(tuple(keys), tuple(prints))


def read_identities(files: Iterable[str]) -> list:
    """Return the identities in age identity files and SSH private key files.

    Raises EncryptionError naming the file, never its content.
    """
    identities = []
    for name in files:
        try:
            data = Path(name).expanduser().read_bytes()
        except OSError as exc:
            raise EncryptionError(f"cannot read identity file {name}: {exc.strerror or exc}") from None
        found = []
        if b"-----BEGIN" in data:
            try:
                found.append(pyrage.ssh.Identity.from_buffer(data))
            except (ValueError, pyrage.IdentityError):
                raise EncryptionError(f"identity file {name}: not an unencrypted SSH private key") from None
        else:
            for line in data.decode(errors="replace").splitlines():
                line = line.strip()
                if line.startswith("AGE-SECRET-KEY-"):
                    try:
                        found.append(pyrage.x25519.Identity.from_str(line))
                    except (ValueError, pyrage.IdentityError):
                        raise EncryptionError(f"identity file {name}: malformed AGE-SECRET-KEY line") from None
        if not found:
            raise EncryptionError(f"identity file {name}: holds no age or SSH identity")
        identities += found
    return identities


# ---------------------------------------------------------------------------------------------
# Streaming in a worker thread.


def _start(target, name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def encrypt_chunks(chunks: Iterable[bytes], key: Recipients | Passphrase) -> Iterator[bytes]:
    """Yield the age encryption of the concatenated ``chunks`` for recipients or with a passphrase.

    Memory is bounded by a few chunks. An exception while iterating ``chunks`` propagates.
    """
    if isinstance(key, Passphrase):
        return age_scrypt.encrypt(chunks, key)
    return _encrypt_for_recipients(chunks, key)


def _encrypt_for_recipients(chunks: Iterable[bytes], recipients: Recipients) -> Iterator[bytes]:
    """Yield the age encryption of the concatenated ``chunks`` for ``recipients``, through pyrage.

    Memory is bounded by a few chunks: input waits in a channel of depth 8, output is drained after
    every input chunk. An exception while iterating ``chunks`` propagates and stops the worker.
    """
    inputs = Channel(_QUEUE_DEPTH, "age-encrypt input")
    outputs = Channel(None, "age-encrypt output")  # bounded in practice by the input channel's depth

    def work() -> None:
        # Held here, not as call arguments: dropping the reader closes it, which stops ``inputs``
        # without the failure below.
        reader, writer = ChannelReader(inputs), ChannelWriter(outputs)
        try:
            pyrage.encrypt_io(reader, writer, list(recipients.keys))
            outputs.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            failure = EncryptionError(f"age encryption failed: {type(exc).__name__}")
            outputs.fail(failure)
            inputs.stop(failure)  # a put waiting for room raises it
        finally:
            inputs.stop()  # pyrage read to the end (or failed): a later put must not wait for it

    thread = _start(work, "age-encrypt")
    try:
        for chunk in chunks:
            inputs.put(chunk)
            yield from outputs.ready()
        inputs.close()
        yield from outputs
    finally:
        outputs.stop()  # the worker's next write raises Stopped
        inputs.fail(Stopped("age-encrypt: the consumer went away"))  # and its next read (after a close: nothing)
        thread.join(timeout=5)


class DecryptingReader(ChannelReader):
    """A readable stream of the plaintext of an age-encrypted stream, decrypted in a worker thread.

    Raises EncryptionError when no identity matches, IntegrityError when the ciphertext was changed
    or cut short (age authenticates every 64 KiB chunk and marks the last one). Call ``close``.
    """

    def __init__(self, stored: BinaryIO, identities: list):
        super().__init__(Channel(_QUEUE_DEPTH, "age-decrypt"))
        items = self.channel

        def work() -> None:
            try:
                pyrage.decrypt_io(stored, ChannelWriter(items), identities)
                items.close()
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer (nothing, once it stopped)
                items.fail(decryption_error(exc))

        self._thread = _start(work, "age-decrypt")

    def close(self) -> None:
        super().close()  # stops the channel: the worker stops at its next write
        # Wait for it (bounded: it may be inside a slow read), so that it does not go on reading a
        # stream its owner is about to close.
        self._thread.join(timeout=5)


def decryption_error(exc: BaseException) -> VolsafeError:
    """Return the one-line error for a pyrage decryption failure (its text holds no key material)."""
    if isinstance(exc, pyrage.DecryptError) and "No matching keys" in str(exc):
        return EncryptionError("cannot decrypt the archive: none of the given identities is one of its recipients")
    if isinstance(exc, VolsafeError):
        return exc
    return IntegrityError("encrypted archive is corrupt, truncated or was tampered with (age decryption failed)")


_NO_IDENTITY = "give --identity FILE (or [encryption] identity_files)"
_NO_PASSPHRASE = f"give --passphrase-file FILE or set {PASSPHRASE_ENV} (or [encryption] passphrase_file)"


def _passphrase_in(identities: list | None) -> Passphrase | None:
    """Return the passphrase among ``identities``, or None."""
    return next((i for i in identities or () if isinstance(i, Passphrase)), None)


def _age_identities(identities: list | None) -> list:
    """Return the age and SSH identities among ``identities`` (what pyrage takes)."""
    return [i for i in identities or () if not isinstance(i, Passphrase)]


def check_identities(head: bytes, identities: list | None) -> None:
    """Check that ``identities`` can open an archive whose first bytes are ``head`` (HEAD_SIZE or all).

    ``identities`` may hold a Passphrase, which opens an archive sealed with one. Returns if one of
    them unwraps the file key. Raises EncryptionError if none does (or none of the right kind was
    given), PassphraseError for a wrong passphrase, IntegrityError if ``head`` is not an age file or
    its header was tampered with.
    """
    if not head.startswith(AGE_FORMAT.encode()):
        raise IntegrityError("archive is marked as encrypted but is not an age file")
    if age_scrypt.is_passphrase_header(head):
        passphrase = _passphrase_in(identities)
        if passphrase is None:
            raise EncryptionError(f"the archive is encrypted with a passphrase: {_NO_PASSPHRASE}")
        age_scrypt.check_passphrase(head, passphrase, whole=len(head) < HEAD_SIZE)
        return
    identities = _age_identities(identities)
    if not identities:
        raise EncryptionError(f"the archive is encrypted for age recipients: {_NO_IDENTITY}")
    try:
        pyrage.decrypt_io(io.BytesIO(head), _Discard(), identities)
    except pyrage.DecryptError as exc:
        if "No matching keys" in str(exc):
            raise decryption_error(exc) from None
        if len(head) < HEAD_SIZE:
            raise decryption_error(exc) from None  # the whole archive was given and is broken
    except OSError:
        if len(head) < HEAD_SIZE:
            raise decryption_error(OSError()) from None
        # The header opened with this key; the payload merely goes on past ``head``.


class _Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return len(data)


def has_key_for(manifest, identities: list | None) -> bool:
    """Return whether ``identities`` hold a key of the kind the archive of ``manifest`` needs: a
    passphrase for one sealed with a passphrase, an age or SSH identity for one with recipients."""
    if manifest.encryption_passphrase:
        return _passphrase_in(identities) is not None
    return bool(_age_identities(identities))


def require_keys(backend, manifest, identities: list | None):
    """Check, before anything is created, that ``identities`` open the encrypted archive of ``manifest``.

    Returns ``manifest``, with its sealed metadata (tar size, entries, content digest) opened if it
    has any, so that it can be checked against the archive; at once for an archive that is not
    encrypted. Raises EncryptionError (no key of the right kind, or none that matches),
    PassphraseError (wrong passphrase), NotFoundError if the archive is missing, IntegrityError if
    it is not an age file or not of the kind its manifest says, or if the sealed metadata does not open.
    """
    from backup.errors import NotFoundError
    from storage_backends import NotFound

    if not manifest.encrypted:
        return manifest
    if not has_key_for(manifest, identities):
        needed = f" with a passphrase: {_NO_PASSPHRASE}" if manifest.encryption_passphrase else f": {_NO_IDENTITY}"
        raise EncryptionError(f"backup {manifest.backup_id} is encrypted{needed}")
    try:
        with backend.open(manifest.backup_id.archive_key) as stored:
            head = stored.read(HEAD_SIZE)
    except NotFound:
        raise NotFoundError(f"archive of {manifest.backup_id} is missing from {backend.url}") from None
    if head.startswith(AGE_FORMAT.encode()) and age_scrypt.is_passphrase_header(head) != manifest.encryption_passphrase:
        raise IntegrityError("archive's age header does not match its manifest (passphrase or recipients)")
    check_identities(head, identities)
    return unseal_metadata(manifest, identities)


# ---------------------------------------------------------------------------------------------
# Sealed manifest metadata: what would link equal contents or confirm a guess (the plaintext's size,
# entry count and content digest) is kept in the manifest only age-encrypted, to the same key as the
# archive. It is small, so it is encrypted and decrypted in memory.


def seal_metadata(manifest, key: Recipients | Passphrase):
    """Return ``manifest`` with its tar size, entries and content digest sealed for ``key`` (the key
    its archive is encrypted with), so that ``to_json`` keeps them only encrypted."""
    import dataclasses

    plain = manifest.sealed_fields()
    if isinstance(key, Passphrase):
        sealed = b"".join(age_scrypt.encrypt([plain], key))
    else:
        sealed = pyrage.encrypt(plain, list(key.keys))
    return dataclasses.replace(manifest, sealed_metadata=base64.b64encode(sealed).decode())


def unseal_metadata(manifest, identities: list | None):
    """Return ``manifest`` with its sealed metadata opened with ``identities``; as it is if it has none.

    Raises EncryptionError or PassphraseError if no key opens it, IntegrityError if it was tampered
    with or is malformed.
    """
    import dataclasses

    from backup.errors import ManifestError
    from backup.archive.manifest import parse_sealed_fields

    if not manifest.sealed:
        return manifest
    sealed = base64.b64decode(manifest.sealed_metadata)  # the manifest parser checked it is base64
    try:
        passphrase = _passphrase_in(identities)
        if manifest.encryption_passphrase:
            if passphrase is None:
                raise EncryptionError(f"backup {manifest.backup_id} is encrypted with a passphrase: {_NO_PASSPHRASE}")
            plain = age_scrypt.DecryptingReader(io.BytesIO(sealed), passphrase).read()
        else:
            plain = pyrage.decrypt(sealed, _age_identities(identities))
        tar_size, entries, content_digest = parse_sealed_fields(plain)
    except pyrage.DecryptError as exc:
        error = decryption_error(exc)
        if isinstance(error, IntegrityError):
            error = IntegrityError("manifest's sealed metadata is corrupt or was tampered with (age decryption failed)")
        raise error from None
    except ManifestError as exc:
        raise IntegrityError(str(exc)) from None
    except IntegrityError:
        raise IntegrityError("manifest's sealed metadata is corrupt or was tampered with (age decryption failed)") from None
    return dataclasses.replace(manifest, tar_size=tar_size, entries=entries, content_digest=content_digest)


def decryptor(manifest, identities: list | None):
    """Return what ``verified_tar`` needs to decrypt the archive of ``manifest`` (None if it is plain):
    a function from the stored stream to a readable plaintext stream."""
    if not manifest.encrypted:
        return None
    passphrase = _passphrase_in(identities)
    if manifest.encryption_passphrase and passphrase is not None:
        return lambda stored: age_scrypt.DecryptingReader(stored, passphrase)
    return lambda stored: DecryptingReader(stored, _age_identities(identities))
