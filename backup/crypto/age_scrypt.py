"""age (age-encryption.org/v1) passphrase encryption: the "scrypt" recipient type and the STREAM
payload, both streaming with bounded memory.

pyrage encrypts with a passphrase only in memory, so this module implements the format itself with
the ``cryptography`` package. An age file is a text header, then the payload:

* header: ``age-encryption.org/v1``, one stanza ``-> scrypt SALT LOG2N`` whose body is the 16-byte
  file key sealed (ChaCha20-Poly1305, zero nonce) with scrypt(passphrase, label + SALT, N=2**LOG2N,
  r=8, p=1), then ``--- MAC``: HMAC-SHA256 of the header, keyed by HKDF(file key, "header").
* payload: a 16-byte nonce, then the plaintext in 64 KiB chunks, each sealed with
  HKDF(file key, nonce, "payload") and the nonce ``11-byte counter || last-chunk flag``.

Pure apart from reading the stored stream it is given; nothing here ever puts the passphrase, or
anything derived from it, in a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import os
import re
from typing import BinaryIO, Iterable, Iterator

from backup.errors import IntegrityError, VolsafeError

VERSION_LINE = b"age-encryption.org/v1\n"
SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
DEFAULT_WORK_FACTOR = 18  # age's own default: about 1 s and 256 MiB on a current CPU
MAX_WORK_FACTOR = 22  # as age: scrypt needs 128 * r * N bytes, 4 GiB at 2**22; more is refused
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
SEALED_CHUNK = CHUNK_SIZE + TAG_SIZE
FILE_KEY_SIZE = 16
SALT_SIZE = 16
NONCE_SIZE = 16
_LINE_LIMIT = 1024  # no line of a valid scrypt header is near this long
_COLUMNS = 64  # stanza bodies wrap at 64 base64 characters
_B64 = re.compile(rb"[A-Za-z0-9+/]*")

# cryptography is imported where a key is derived or a chunk sealed or opened, not with this module:
# every backup imports it (through the CLI's key options), and most do not encrypt (about 0.02 s).


class PassphraseError(VolsafeError):
    """The passphrase does not open the archive, or the archive's scrypt work factor is too high."""


class Passphrase:
    """A passphrase for age's scrypt recipient type. ``source`` (e.g. ``VOLSAFE_PASSPHRASE``) names
    where it came from for messages; the text itself is never shown, not even by ``repr``.

    Remembers the scrypt keys it derived, so checking an archive first and then decrypting it costs
    one derivation, not two.
    """

    def __init__(self, secret: bytes, source: str = "the passphrase"):
        self._secret = bytes(secret)
        self.source = source
        self._derived: dict[tuple[bytes, int], bytes] = {}

    def __repr__(self) -> str:
        return f"Passphrase(from {self.source})"

    def wrapping_key(self, salt: bytes, work_factor: int) -> bytes:
        """Return scrypt(passphrase, label + ``salt``, N=2**work_factor, r=8, p=1), 32 bytes.

        Raises ValueError if the work factor is out of scrypt's range.
        """
        known = self._derived.get((salt, work_factor))
        if known is None:
            if len(self._derived) >= 8:
                self._derived.clear()  # each backup has a new salt: keep a scheduler's memory flat
            from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

            known = Scrypt(salt=SCRYPT_LABEL + salt, length=32, n=1 << work_factor, r=8, p=1).derive(self._secret)
            self._derived[(salt, work_factor)] = known
        return known


def _b64(data: bytes) -> bytes:
    """Return ``data`` in base64 without padding, as age writes it."""
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes, what: str) -> bytes:
    """Return the bytes of canonical unpadded base64 ``text``. Raises IntegrityError otherwise."""
    if not _B64.fullmatch(text) or len(text) % 4 == 1:
        raise IntegrityError(f"malformed age header: {what} is not base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise IntegrityError(f"malformed age header: {what} is not base64") from None
    if _b64(data) != text:  # non-zero padding bits: age rejects the non-canonical form
        raise IntegrityError(f"malformed age header: {what} is not canonical base64")
    return data


def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    """Return HKDF-SHA256(``key``, ``salt``, ``info``), 32 bytes."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


def _header_mac(file_key: bytes, header: bytes) -> bytes:
    """Return the header's HMAC-SHA256 (``header`` ends with ``---``)."""
    return hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def is_passphrase_header(head: bytes) -> bool:
    """Return whether ``head`` (an archive's first bytes) starts an age file sealed with a passphrase."""
    return head.startswith(VERSION_LINE + b"-> scrypt ")


# ---------------------------------------------------------------------------------------------
# Encryption.


def _header(file_key: bytes, passphrase: Passphrase, work_factor: int) -> bytes:
    """Return the age header that seals ``file_key`` with ``passphrase``, its MAC line included."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    salt = os.urandom(SALT_SIZE)
    sealed = ChaCha20Poly1305(passphrase.wrapping_key(salt, work_factor)).encrypt(bytes(12), file_key, None)
    body = _b64(sealed)
    lines = [body[i : i + _COLUMNS] for i in range(0, len(body), _COLUMNS)]
    if len(body) % _COLUMNS == 0:
        lines.append(b"")  # the body's last line must be shorter than a full one
    header = VERSION_LINE + b"-> scrypt " + _b64(salt) + b" %d\n" % work_factor + b"\n".join(lines) + b"\n---"
    return header + b" " + _b64(_header_mac(file_key, header)) + b"\n"


def encrypt(chunks: Iterable[bytes], passphrase: Passphrase, *, work_factor: int = DEFAULT_WORK_FACTOR) -> Iterator[bytes]:
    """Yield the age encryption of the concatenated ``chunks`` with ``passphrase``.

    A generator: it holds at most one input chunk and one 64 KiB payload chunk, and yields the
    header before it reads any input. Exceptions while iterating ``chunks`` propagate.
    """
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    file_key, nonce = os.urandom(FILE_KEY_SIZE), os.urandom(NONCE_SIZE)
    yield _header(file_key, passphrase, work_factor) + nonce
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    counter = 0
    pending = b""  # plaintext not sealed yet: it may be the last chunk, which is marked
    for data in chunks:
        if not data:
            continue
        buffer = memoryview(pending + data if pending else data)
        start, sealed = 0, []
        while len(buffer) - start > CHUNK_SIZE:
            sealed.append(aead.encrypt(_chunk_nonce(counter, False), buffer[start : start + CHUNK_SIZE], None))
            counter += 1
            start += CHUNK_SIZE
        pending = bytes(buffer[start:])
        if sealed:
            yield b"".join(sealed)
    # Empty only when the whole plaintext is: age then stores a single empty last chunk.
    yield aead.encrypt(_chunk_nonce(counter, True), pending, None)


# ---------------------------------------------------------------------------------------------
# Decryption.


class _Input:
    """Reads a stored stream by lines and by exact sizes, whatever size its reads return."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.buffer = bytearray()
        self.eof = False

    def _fill(self) -> bool:
        """Read one more block into the buffer; return False at the end of the stream."""
        if self.eof:
            return False
        data = self.raw.read(SEALED_CHUNK)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def readline(self) -> bytes:
        """Return the next line with its ``\\n``, or what is left at the end of the stream.

        Raises IntegrityError for a line longer than any in a valid header.
        """
        while True:
            end = self.buffer.find(b"\n", 0, _LINE_LIMIT)
            if end >= 0:
                return self.read(end + 1)
            if len(self.buffer) >= _LINE_LIMIT:
                raise IntegrityError("malformed age header: a line is too long")
            if not self._fill():
                return self.read(len(self.buffer))

    def read(self, size: int) -> bytes:
        """Return the next ``size`` bytes, fewer only at the end of the stream."""
        while len(self.buffer) < size and self._fill():
            pass
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def at_end(self) -> bool:
        """Return whether the stream holds no more bytes."""
        return not self.buffer and not self._fill()


def _parse_stanza(line: bytes, max_work_factor: int) -> tuple[bytes, int]:
    """Return the salt and work factor of an ``-> scrypt SALT LOG2N`` line.

    Raises PassphraseError for a stanza of another type or a work factor above ``max_work_factor``,
    IntegrityError for a malformed one.
    """
    if not line.startswith(b"-> ") or not line.endswith(b"\n"):
        raise IntegrityError("malformed age header: no recipient stanza")
    args = line[3:-1].split(b" ")
    if args[0] != b"scrypt":
        raise PassphraseError("the archive is encrypted for age recipients, not with a passphrase")
    if len(args) != 3:
        raise IntegrityError("malformed age header: the scrypt stanza needs a salt and a work factor")
    salt = _unb64(args[1], "the scrypt salt")
    if len(salt) != SALT_SIZE:
        raise IntegrityError("malformed age header: the scrypt salt is not 16 bytes")
    if not re.fullmatch(rb"[1-9][0-9]{0,1}", args[2]):
        raise IntegrityError("malformed age header: the scrypt work factor is not a number from 1 to 99")
    work_factor = int(args[2])
    if work_factor > max_work_factor:
        memory = 128 * 8 * (1 << work_factor) >> 20
        raise PassphraseError(
            f"the archive's scrypt work factor {work_factor} is above {max_work_factor}, the most volsafe accepts "
            f"(it would need {memory} MiB of memory)"
        )
    return salt, work_factor


def _read_header(source: _Input, max_work_factor: int) -> tuple[bytes, int, bytes, bytes, bytes]:
    """Return (salt, work factor, sealed file key, MAC, header bytes the MAC covers) of an age header.

    Raises IntegrityError for a header that is not a well-formed age scrypt header, PassphraseError
    as ``_parse_stanza`` does.
    """
    first = source.readline()
    if first != VERSION_LINE:
        raise IntegrityError("archive is not an age file (age-encryption.org/v1)")
    stanza = source.readline()
    salt, work_factor = _parse_stanza(stanza, max_work_factor)
    body, lines = b"", [first, stanza]
    while True:
        line = source.readline()
        lines.append(line)
        if not line.endswith(b"\n") or len(line) > _COLUMNS + 1:
            raise IntegrityError("malformed age header: bad stanza body")
        body += line[:-1]
        if len(line) < _COLUMNS + 1:
            break
        if len(body) > 2 * _COLUMNS:
            raise IntegrityError("malformed age header: the scrypt stanza body is too long")
    sealed = _unb64(body, "the scrypt stanza body")
    if len(sealed) != FILE_KEY_SIZE + TAG_SIZE:
        raise IntegrityError("malformed age header: the scrypt stanza body is not a sealed file key")
    mac_line = source.readline()
    if mac_line.startswith(b"-> "):
        raise IntegrityError("malformed age header: an scrypt stanza must be the only one")
    if not mac_line.startswith(b"--- ") or not mac_line.endswith(b"\n"):
        raise IntegrityError("malformed age header: no '---' MAC line")
    mac = _unb64(mac_line[4:-1], "the header MAC")
    return salt, work_factor, sealed, mac, b"".join(lines) + b"---"


class DecryptingReader(io.RawIOBase):
    """A readable stream of the plaintext of a passphrase-sealed age stream read from ``stored``.

    The header is read and checked when the reader is made: raises PassphraseError for a wrong
    passphrase (or a work factor above ``max_work_factor``), IntegrityError for a malformed or
    tampered header. Reads raise IntegrityError when the payload was changed or cut short: every
    64 KiB chunk is authenticated and the last one is marked. Plaintext is handed out only after the
    chunk holding it has been authenticated.
    """

    def __init__(self, stored: BinaryIO, passphrase: Passphrase, *, max_work_factor: int = MAX_WORK_FACTOR):
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        self._source = _Input(stored)
        salt, work_factor, sealed, mac, header = _read_header(self._source, max_work_factor)
        try:
            file_key = ChaCha20Poly1305(passphrase.wrapping_key(salt, work_factor)).decrypt(bytes(12), sealed, None)
        except InvalidTag:
            raise PassphraseError(f"cannot decrypt the archive: wrong passphrase (from {passphrase.source})") from None
        if not hmac.compare_digest(_header_mac(file_key, header), mac):
            raise IntegrityError("encrypted archive was tampered with: its age header MAC does not match")
        nonce = self._source.read(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise IntegrityError("encrypted archive is truncated: it ends inside the age header")
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._invalid_tag = InvalidTag  # what a payload chunk that fails authentication raises
        self._counter = 0
        self._plain = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bytes:
        """Return the plaintext of the next payload chunk. Raises IntegrityError if it does not open."""
        sealed = self._source.read(SEALED_CHUNK)
        last = len(sealed) < SEALED_CHUNK or self._source.at_end()
        if len(sealed) < TAG_SIZE:
            raise IntegrityError("encrypted archive is truncated: its age payload is cut short")
        if last and len(sealed) == TAG_SIZE and self._counter > 0:
            raise IntegrityError("encrypted archive is malformed: its age payload ends with an empty chunk")
        try:
            plain = self._aead.decrypt(_chunk_nonce(self._counter, last), sealed, None)
        except self._invalid_tag:
            raise IntegrityError(
                f"encrypted archive is corrupt, truncated or was tampered with (age payload chunk {self._counter} fails authentication)"
            ) from None
        self._counter += 1
        self._done = last
        return plain

    def readinto(self, target) -> int:
        while not self._plain and not self._done:
            self._plain = memoryview(self._next_chunk())
        n = min(len(target), len(self._plain))
        target[:n] = self._plain[:n]
        self._plain = self._plain[n:]
        return n


def check_passphrase(head: bytes, passphrase: Passphrase, *, whole: bool) -> None:
    """Check that ``passphrase`` opens the age file that starts with ``head``.

    Returns if the header opens and its MAC matches; with ``whole`` (``head`` is the entire file),
    also if every payload chunk does. Raises as DecryptingReader does.
    """
    reader = DecryptingReader(io.BytesIO(head), passphrase)
    if whole:
        while reader.read(SEALED_CHUNK):
            pass
