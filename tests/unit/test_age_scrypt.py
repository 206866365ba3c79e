"""age passphrase encryption (backup.crypto.age_scrypt): round trips, pyrage and the age CLI in both
directions, wrong passphrase, tampering, truncation, limits, and bounded memory."""

from __future__ import annotations

import io
import os
import pty
import shutil
import signal
import time

import pyrage
import pytest

from backup.crypto import age_scrypt
from backup.crypto.age_scrypt import CHUNK_SIZE, DecryptingReader, Passphrase, PassphraseError, encrypt
from backup.errors import IntegrityError
from tests.support.required import skip_or_fail
from tests.support.terminal import read_terminal

WORK = 10  # a low scrypt work factor keeps these tests fast; volsafe itself writes 18
SECRET = "correct horse battery staple"
SIZES = [0, 1, 65535, 65536, 65537, 3 * 65536]


def sealed(data: bytes, secret: str = SECRET, piece: int = 10_000) -> bytes:
    """Return ``data`` encrypted by volsafe, fed in ``piece``-byte chunks."""
    chunks = (data[i : i + piece] for i in range(0, len(data), piece))
    return b"".join(encrypt(chunks, Passphrase(secret.encode()), work_factor=WORK))


def opened(stored: bytes, secret: str = SECRET) -> bytes:
    return DecryptingReader(io.BytesIO(stored), Passphrase(secret.encode())).read()


def payload_start(stored: bytes) -> int:
    """Return the offset of the first payload chunk (after the header and the 16-byte nonce)."""
    return stored.index(b"\n", stored.index(b"\n---") + 1) + 1 + 16


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("piece", [1000, 65536, 1 << 20])
def test_round_trip_at_chunk_boundaries(size, piece):
    data = os.urandom(size)
    stored = sealed(data, piece=piece)
    chunks = max(1, -(-size // CHUNK_SIZE))
    assert len(stored) - payload_start(stored) == size + 16 * chunks  # every chunk full but the last
    assert opened(stored) == data


def test_header_is_age_scrypt_with_the_default_work_factor():
    head = next(encrypt(iter([b"x"]), Passphrase(b"pw")))
    lines = head.split(b"\n")
    assert lines[0] == b"age-encryption.org/v1"
    kind, salt, work = lines[1].split(b" ")[1:]
    assert (kind, len(salt), work) == (b"scrypt", 22, b"18")
    assert len(lines[2]) == 43 and lines[3].startswith(b"--- ") and len(lines[3]) == 47
    assert age_scrypt.is_passphrase_header(head)


@pytest.mark.parametrize("size", [0, 65536, 3 * 65536 + 7])
def test_pyrage_decrypts_ours(size):
    data = os.urandom(size)
    assert pyrage.passphrase.decrypt(sealed(data), SECRET) == data


@pytest.mark.parametrize("size", [0, 65536 + 1])
def test_ours_decrypts_pyrage(size):
    data = os.urandom(size)
    stored = pyrage.passphrase.encrypt(data, SECRET)
    # rage picks a work factor that takes about a second (19 here); the default limit is age's, 22.
    reader = DecryptingReader(io.BytesIO(stored), Passphrase(SECRET.encode()))
    assert reader.read() == data


def test_wrong_passphrase_is_named_and_not_quoted():
    stored = sealed(b"data")
    with pytest.raises(PassphraseError, match="wrong passphrase") as info:
        DecryptingReader(io.BytesIO(stored), Passphrase(b"not-the-passphrase", "VOLSAFE_PASSPHRASE"))
    assert "not-the-passphrase" not in str(info.value) and SECRET not in str(info.value)
    assert "VOLSAFE_PASSPHRASE" in str(info.value)
    assert SECRET not in repr(Passphrase(SECRET.encode()))


def flipped(stored: bytes, at: int) -> bytes:
    data = bytearray(stored)
    data[at] ^= 0x01
    return bytes(data)


def base64_char_at(stored: bytes, start: int) -> int:
    """Return the first position from ``start`` whose character stays base64 with a bit flipped
    (random keys and MACs make any fixed position sometimes turn into '.' or '*')."""
    return next(i for i in range(start, start + 40) if chr(stored[i]).isalnum() and chr(stored[i] ^ 1).isalnum())


def test_tampered_header_mac_and_version_are_integrity_errors():
    stored = sealed(b"hello" * 1000)
    mac_at = base64_char_at(stored, stored.index(b"\n---") + 6)
    with pytest.raises(IntegrityError, match="tampered"):
        opened(flipped(stored, mac_at))
    with pytest.raises(IntegrityError, match="not an age file"):
        opened(flipped(stored, 3))


def test_tampered_stanza_reads_as_a_wrong_passphrase():
    # The stanza body is sealed with the passphrase's key: a change there cannot be told from a wrong key.
    stored = sealed(b"hello")
    at = base64_char_at(stored, stored.index(b"\n", len(b"age-encryption.org/v1\n")) + 1)
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        opened(flipped(stored, at))


@pytest.mark.parametrize("where", ["first chunk", "last chunk", "nonce"])
def test_tampered_payload_fails_on_read(where):
    stored = sealed(os.urandom(3 * 65536 + 100))
    start = payload_start(stored)
    at = {"first chunk": start + 10, "last chunk": len(stored) - 5, "nonce": start - 3}[where]
    with pytest.raises(IntegrityError, match="fails authentication"):
        opened(flipped(stored, at))


@pytest.mark.parametrize("cut", ["last chunk", "mid chunk", "whole payload", "inside nonce", "inside header"])
def test_truncated_archive_is_refused(cut):
    size = 2 * 65536 + 500
    stored = sealed(os.urandom(size))
    start = payload_start(stored)
    end = {
        "last chunk": len(stored) - (500 + 16),
        "mid chunk": start + 65536 + 16 + 1000,
        "whole payload": start,
        "inside nonce": start - 5,
        "inside header": 30,
    }[cut]
    with pytest.raises(IntegrityError):
        opened(stored[:end])


def test_full_last_chunk_then_empty_chunk_is_refused():
    # 64 KiB sealed as a non-final chunk followed by an empty final one: age forbids that form.
    passphrase = Passphrase(SECRET.encode())
    stored = sealed(b"a" * 65536)
    start = payload_start(stored)
    header, nonce = stored[: start - 16], stored[start - 16 : start]
    aead = DecryptingReader(io.BytesIO(stored), passphrase)._aead  # the payload key, to forge with
    forged = header + nonce + aead.encrypt((0).to_bytes(11, "big") + b"\x00", b"a" * 65536, None)
    forged += aead.encrypt((1).to_bytes(11, "big") + b"\x01", b"", None)
    with pytest.raises(IntegrityError, match="empty chunk"):
        opened(forged)


def test_work_factor_above_the_limit_is_refused_before_deriving():
    stored = sealed(b"data")
    high = stored.replace(b" 10\n", b" 23\n", 1)
    started = time.monotonic()
    with pytest.raises(PassphraseError, match="work factor 23 is above 22") as info:
        opened(high)
    assert time.monotonic() - started < 1 and "MiB of memory" in str(info.value)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.replace(b"\n---", b"\n-> X25519 AAAA\nAAAA\n---", 1),  # a second stanza
        lambda s: s.replace(b"-> scrypt ", b"-> scrypt  ", 1),  # empty argument
        lambda s: s.replace(b" 10\n", b" 010\n", 1),  # leading zero
        lambda s: s.replace(b"\n---", b"\n", 1),  # no MAC line
    ],
)
def test_malformed_headers_are_refused(change):
    with pytest.raises(IntegrityError, match="malformed age header"):
        opened(change(sealed(b"data")))


def test_recipient_header_is_not_taken_for_a_passphrase():
    identity = pyrage.x25519.Identity.generate()
    stored = pyrage.encrypt(b"data", [identity.to_public()])
    assert not age_scrypt.is_passphrase_header(stored)
    with pytest.raises(PassphraseError, match="age recipients"):
        opened(stored)


def test_encoder_streams_with_bounded_memory():
    consumed = 0

    def endless():
        nonlocal consumed
        while True:
            consumed += 1
            yield b"z" * 100_000

    stream = encrypt(endless(), Passphrase(b"pw"), work_factor=WORK)
    assert next(stream).startswith(b"age-encryption.org/v1\n")
    assert consumed == 0  # the header comes before any input is read
    out = sum(len(next(stream)) for _ in range(50))
    assert consumed <= 51 and out >= 49 * 100_000  # output keeps pace with input: nothing piles up


def test_decoder_reads_the_stored_stream_as_it_goes():
    data = os.urandom(4 << 20)
    stored = sealed(data, piece=1 << 20)

    class Counting(io.BytesIO):
        high = 0

        def read(self, size=-1):
            chunk = super().read(size)
            Counting.high = max(Counting.high, self.tell())
            return chunk

    reader = DecryptingReader(Counting(stored), Passphrase(SECRET.encode()))
    assert reader.read(10) == data[:10]
    assert Counting.high < 3 * (CHUNK_SIZE + 16)  # a chunk or two ahead, not the whole archive
    assert data[10:] == reader.read()


# ---------------------------------------------------------------------------------------------
# The reference age CLI, which reads a passphrase only from a terminal: driven through a pty.

@pytest.fixture
def age_cli() -> None:
    """The reference age CLI: skipped without it, but a failure where every test must run."""
    if shutil.which("age") is None:
        skip_or_fail("the age CLI is not installed (scripts/lib.sh installs it)")


needs_age = pytest.mark.usefixtures("age_cli")


def run_with_passphrase(argv: list[str], passphrase: str, timeout: float = 60) -> tuple[int, bytes]:
    """Run ``argv`` on a new pseudo-terminal, typing ``passphrase`` at every passphrase prompt.

    Returns (exit code, what it wrote to the terminal). Kills it after ``timeout`` seconds.
    """
    pid, fd = pty.fork()
    if pid == 0:  # the child: argv with the pty as its controlling terminal
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    answered = 0

    def respond(seen: bytes) -> bytes | None:
        nonlocal answered
        prompts = seen.lower().count(b"passphrase")
        if prompts > answered and seen.rstrip().endswith(b":"):
            answered = prompts
            return passphrase.encode() + b"\n"
        return None

    try:
        seen = read_terminal(fd, time.monotonic() + timeout, respond=respond, what=argv[0])
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen


@needs_age
def test_age_cli_decrypts_ours(tmp_path):
    data = os.urandom(3 * 65536 + 11)
    (tmp_path / "in.age").write_bytes(sealed(data))
    code, said = run_with_passphrase(["age", "-d", "-o", str(tmp_path / "out"), str(tmp_path / "in.age")], SECRET)
    assert code == 0, said
    assert (tmp_path / "out").read_bytes() == data
    code, said = run_with_passphrase(["age", "-d", "-o", str(tmp_path / "bad"), str(tmp_path / "in.age")], "wrong")
    assert code != 0 and not (tmp_path / "bad").exists()


@needs_age
def test_ours_decrypts_age_cli(tmp_path):
    data = os.urandom(2 * 65536)
    (tmp_path / "in").write_bytes(data)
    code, said = run_with_passphrase(["age", "-p", "-o", str(tmp_path / "out.age"), str(tmp_path / "in")], SECRET)
    assert code == 0, said
    stored = (tmp_path / "out.age").read_bytes()
    assert age_scrypt.is_passphrase_header(stored) and b" 18\n" in stored.split(b"\n---")[0]
    assert opened(stored) == data
