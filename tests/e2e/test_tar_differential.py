"""Differential tests: each crafted archive (tests/support/crafted_tars.py) read by every tar reader involved.

volsafe's reader (``backup.archive.tar.scanner.TarReader``) decides what an archive holds, and restore hands
the extractor a stream re-emitted from those decisions. For every crafted archive, volsafe must
either refuse it, or read the same entries as Python's tarfile (an independent oracle) reads from
the stored bytes, and as busybox tar (restore's extractor) and GNU tar (the extractor of
``--to-container`` into a GNU userland) extract in a helper container from what restore feeds them.
The entries are compared by path, type, size, mode, owner, mtime, link target and device numbers.
"""

from __future__ import annotations


import pytest

from backup.archive.codec import checked_backup_tar
from backup.errors import IntegrityError
from backup.docker.helper import helper_session
from backup.docker.volume_tar import gnu_tar_of
from storage_backends.local import LocalBackend
from tests.support.crafted_tars import CASES, store_crafted
from tests.support.tar_views import canonical, tarfile_view, volsafe_view
from tests.support.volume_tree import snapshot



# -- without Docker --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_volsafe_reads_what_tarfile_reads_or_refuses(case):
    data, expected = CASES[case]
    found = volsafe_view(data)
    if expected == "refuse":
        assert found is None, f"volsafe read {found}"
        return
    assert found is not None, "volsafe refused an archive that every reader reads alike"
    assert found == tarfile_view(data)
    # The stream restore would hand on holds exactly that, for tarfile too, and reads the same again.
    again = canonical(data)
    assert tarfile_view(again) == found
    assert volsafe_view(again) == found and canonical(again) == again


@pytest.mark.parametrize("case", sorted(CASES))
def test_any_chunking_gives_the_same_answer(case):
    data, _ = CASES[case]
    answers = {repr(volsafe_view(data, chunk)) for chunk in (1, 511, 512, 513, 1 << 20)}
    assert len(answers) == 1


# -- against the real extractors -------------------------------------------------------------------


@pytest.fixture(scope="module")
def extractor(docker_host, helper_image):
    """A writer helper on a scratch volume; run(command, chunks) extracts into a new directory there
    and returns (exit code, output, view of what it extracted)."""
    import secrets

    volume = f"vstest-differential-{secrets.token_hex(4)}"
    docker_host.api.create_volume(volume)
    counter = iter(range(10**6))
    try:
        with helper_session(docker_host, helper_image, volume, role="test", writable=True) as session:

            def run(tar_command: str, chunks) -> tuple[int, str, dict]:
                where = f"/volsafe/target/x{next(counter)}"
                result = session.exec(["sh", "-c", f'mkdir "$1" && exec {tar_command} -x -f - -C "$1"', "sh", where], stdin=chunks)
                stream, _ = docker_host.api.get_archive(session.id, where + "/.")
                return result.exit_code, result.output, tarfile_view(b"".join(stream))

            yield run
    finally:
        docker_host.api.remove_volume(volume, force=True)


@pytest.mark.docker
@pytest.mark.parametrize("case", sorted(CASES))
def test_extractors_extract_exactly_what_volsafe_checked(case, extractor, docker_host, helper_image, tmp_path):
    data, expected = CASES[case]
    backend = LocalBackend(tmp_path)
    manifest = store_crafted(backend, "crafted", [data], stamp_token="d1ff")

    def restore_stream() -> list[bytes]:  # what restore hands to tar in the helper
        with backend.open(manifest.backup_id.archive_key) as stored:
            return list(checked_backup_tar(stored, manifest, decrypt=None))

    if expected == "refuse":
        with pytest.raises(IntegrityError, match="archive refused|malformed"):
            restore_stream()
        return
    checked = volsafe_view(data)
    extractors = ["tar"]  # busybox
    gnu_tar = gnu_tar_of(docker_host, helper_image)
    if gnu_tar:
        extractors.append(gnu_tar)
    for command in extractors:
        code, output, extracted = extractor(command, restore_stream())
        assert code == 0, output
        assert extracted == checked, command


# The stored bytes themselves mean something else to busybox than to tarfile: the disagreements
# volsafe must not pass on (each is refused, or re-emitted so that busybox reads what tarfile does).
AMBIGUOUS_TO_BUSYBOX = [
    "pax-size-larger-ustar-zero", "pax-size-larger-ustar-nonzero", "pax-size-smaller", "pax-size-smaller-nonzero",
    "zeros-in-the-gap", "gnu-long-name-and-pax-path", "two-pax-headers", "two-gnu-long-names", "pax-global-path",
    "pax-record-in-padding",
]


@pytest.mark.docker
@pytest.mark.parametrize("case", AMBIGUOUS_TO_BUSYBOX)
def test_busybox_reads_the_stored_bytes_differently(case, extractor):
    data, _ = CASES[case]
    _code, _output, extracted = extractor("tar", [data])
    assert extracted != tarfile_view(data)


@pytest.mark.docker
@pytest.mark.parametrize(
    "case", ["pax-size-larger-ustar-zero", "zeros-in-the-gap", "pax-size-larger-ustar-nonzero", "prefix-under-gnu-magic", "two-pax-headers"]
)
def test_restore_and_verify_of_crafted_archives(case, docker_host, helper_image, volumes, volsafe, tmp_path):
    data, expected = CASES[case]
    manifest = store_crafted(LocalBackend(tmp_path), "crafted", [data], stamp_token="c4f7")
    target = volumes("crafted")
    verified = volsafe("verify", str(manifest.backup_id), "--from", str(tmp_path))
    restored = volsafe("restore", str(manifest.backup_id), "--from", str(tmp_path), "--to-volume", target)
    if expected == "refuse":
        assert verified.code == 1 and "FAILED" in verified.out and "archive refused" in verified.out
        assert restored.code == 1 and "archive refused" in restored.err
        assert not docker_host.volume_exists(target)
        return
    assert verified.code == 0, verified.out
    assert restored.code == 0, restored.err
    entries, _links = snapshot(docker_host, helper_image, target)
    got = {path: (e.kind, e.size, e.mode, e.uid) for path, e in entries.items() if path not in (".", "")}
    want = {path: (r[0], r[1], r[2], r[3]) for path, r in volsafe_view(data).items()}
    assert got == want  # no hidden setuid file or device, nothing missing, nothing truncated
