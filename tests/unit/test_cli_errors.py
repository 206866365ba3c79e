"""How the CLI reports what goes wrong: one ``volsafe: error: …`` line, a documented exit code,
never "unexpected"; a traceback only with --debug. Runs the real CLI (``backup.cli.main``)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from backup.errors import VolsafeError
from storage_backends import BackendError, NotFound, PermanentError, TransientError
from storage_backends.retry import RetryPolicy

pytest_plugins = ["tests.support.backend_conformance"]  # aws_env, s3_http: moto's S3 server on 127.0.0.1


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("volsafe: error:")]


def assert_one_plain_line(err: str) -> str:
    """Return the one error line; fail if there is another, a traceback or an "unexpected"."""
    assert "unexpected" not in err and "Traceback" not in err, err
    (line,) = error_lines(err)
    assert err.splitlines()[-1] == line, err  # retry warnings may come before it, nothing after
    return line


# -- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["backup", "--no-such", "db"], "No such option: --no-such (see 'volsafe backup --help')"),
        (["bogus"], "No such command 'bogus'. (see 'volsafe --help')"),
        (["restore"], "Missing argument 'REF'. (see 'volsafe restore --help')"),
        (["list", "--from"], "Option '--from' requires an argument. (see 'volsafe list --help')"),
        (["jobs", "run"], "Missing argument 'NAME'. (see 'volsafe jobs run --help')"),
        (["--host"], "Option '--host' requires an argument. (see 'volsafe --help')"),
    ],
)
def test_usage_errors_exit_2_with_clicks_message_and_a_help_hint(run, args, message):
    code, out, err = run(*args)
    assert (code, out) == (2, ""), err
    assert err == f"volsafe: error: {message}\n"


@pytest.mark.parametrize(
    "args, option, command",
    [
        (["backup", "--level", "30", "db"], "--level", "backup"),
        (["backup", "db", "--concurrency", "0"], "--concurrency", "backup"),
        (["prune", "--keep-last", "-1"], "--keep-last", "prune"),
        (["backup", "--level", "x", "db"], "--level", "backup"),
    ],
)
def test_a_bad_option_value_names_the_option(run, args, option, command):
    code, out, err = run(*args)
    assert (code, out) == (2, ""), err
    line = assert_one_plain_line(err)
    assert line.startswith(f"volsafe: error: Invalid value for '{option}'")
    assert line.endswith(f" (see 'volsafe {command} --help')")


def test_a_command_group_named_alone_shows_its_help(run):
    for args, usage in (([], "Usage: volsafe [OPTIONS] COMMAND [ARGS]..."), (["jobs"], "Usage: volsafe jobs [OPTIONS] COMMAND [ARGS]...")):
        code, out, err = run(*args)
        assert code == 2 and out == ""
        assert err.splitlines()[0] == usage and "error" not in err, err


def test_usage_error_with_debug_shows_the_traceback(run):
    code, out, err = run("--debug", "backup", "--no-such", "db")
    assert code == 2
    assert error_lines(err) == ["volsafe: error: No such option: --no-such (see 'volsafe backup --help')"]
    assert "Traceback" in err and "unexpected" not in err


def test_global_options_work_after_the_command(run, tmp_path):
    config = tmp_path / "v.toml"
    config.write_text(f'[backends.nas]\ntype = "local"\npath = "{tmp_path}/nas"\n')
    code, out, err = run("list", "--from", "nas", "--json", "--config", str(config))
    assert code == 0, err
    assert out.strip() == "[]"
    code, out, err = run("jobs", "list", "-c", str(config))
    assert code == 0 and "no jobs configured" in err

    socket = f"unix://{tmp_path}/no.sock"
    code, out, err = run("backup", "anything", "--to", str(tmp_path), "--host", socket)
    assert code == 1
    assert err.splitlines() == [
        f"volsafe: error: cannot reach the Docker daemon at {socket}: No such file or directory "
        "(is dockerd running? set DOCKER_HOST or --host)"
    ]
    # A command's own option wins over the root's; --debug works there too.
    code, out, err = run("-H", "unix:///elsewhere.sock", "backup", "anything", "--to", str(tmp_path), "-H", socket, "--debug")
    assert code == 1 and f"cannot reach the Docker daemon at {socket}" in err and "Traceback" in err


def test_help_shows_the_global_options_on_each_command_and_one_metavar_style(run):
    usages = {
        ("backup",): "volsafe backup [OPTIONS] [VOLUME...]",
        ("restore",): "volsafe restore [OPTIONS] [REF...]",
        ("list",): "volsafe list [OPTIONS] [VOLUME]",
        ("prune",): "volsafe prune [OPTIONS] [VOLUME]",
        ("verify",): "volsafe verify [OPTIONS] [REF...]",
        ("migrate",): "volsafe migrate [OPTIONS] [VOLUME...]",
        ("volumes",): "volsafe volumes [OPTIONS]",
        ("run",): "volsafe run [OPTIONS]",
        ("jobs", "list"): "volsafe jobs list [OPTIONS]",
        ("jobs", "run"): "volsafe jobs run [OPTIONS] NAME",
        ("config", "check"): "volsafe config check [OPTIONS]",
        ("helper-image", "build"): "volsafe helper-image build [OPTIONS]",
    }
    for command, usage in usages.items():
        code, out, err = run(*command, "--help")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0] == f"Usage: {usage}", (command, lines[0])
        options = [line.strip() for line in lines if line.lstrip().startswith("-")]
        for flag in ("-H, --host URL", "--helper-image IMAGE", "-c, --config FILE", "--debug"):
            assert any(line.startswith(flag) for line in options), (command, flag, options)
        for line in options:
            assert "<" not in line.split("  ")[0], (command, line)  # a metavar, not a type such as <str>
        if command in (("backup",), ("list",), ("prune",), ("verify",), ("migrate",)):
            assert any(line.lstrip().startswith("--from BACKEND") or line.lstrip().startswith("--to BACKEND")
                       or line.lstrip().startswith("--via BACKEND") for line in lines), command


# -- backends --------------------------------------------------------------------------------


def test_backend_errors_are_volsafe_errors_and_storage_backends_stays_independent():
    for cls in (BackendError, NotFound, PermanentError, TransientError):
        assert issubclass(cls, VolsafeError) and cls.exit_code == 1
    imported = subprocess.run(
        [sys.executable, "-c",
         "import sys, storage_backends, storage_backends.local, storage_backends.s3, storage_backends.retry\n"
         "print(sorted(m for m in sys.modules if m == 'backup' or m.startswith('backup.')))"],
        capture_output=True, text=True, check=True,
    )
    assert imported.stdout.strip() == "[]"


def test_list_from_a_dead_s3_endpoint_is_one_plain_line(run, aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, failures: 0.0)  # the retries, without the waits
    code, out, err = run("list", "--from", "s3://volsafe-dead/p")
    assert (code, out) == (1, "")
    line = assert_one_plain_line(err)
    assert line.startswith("volsafe: error: s3://volsafe-dead/p: cannot connect to endpoint http://127.0.0.1:9: "), line
    warnings = err.splitlines()[:-1]
    assert len(warnings) == 4 and all(w.startswith("volsafe: WARNING: s3://volsafe-dead/p: ") for w in warnings), err


def test_list_from_an_unreadable_directory_is_one_plain_line(run, tmp_path, monkeypatch):
    store = tmp_path / "store"
    (store / "db").mkdir(parents=True)
    real_listdir = os.listdir

    def listdir(path="."):  # what a directory without read permission does (the tests run as root)
        if isinstance(path, int) or os.fspath(path).startswith(str(store)):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    code, out, err = run("list", "--from", str(store))
    assert (code, out) == (1, "")
    line = assert_one_plain_line(err)
    assert line.startswith(f"volsafe: error: {store.as_uri()}: cannot list") and line.endswith("Permission denied"), line


def test_every_command_that_reads_a_backend_reports_its_failure_as_one_plain_line(run, s3_http):
    url = "s3://volsafe-test-no-such-bucket/p"
    expected = f"volsafe: error: {url}: bucket does not exist"
    for args in (["list"], ["verify", "--all"], ["verify", "db"], ["prune", "--keep-last", "1"]):
        code, out, err = run(*args, "--from", url)
        assert code == 1, (args, err)
        assert assert_one_plain_line(err) == expected, args
    code, out, err = run("--debug", "list", "--from", url)
    assert code == 1 and expected in err.splitlines() and "Traceback" in err
    # A location no backend understands stays a usage error.
    code, out, err = run("list", "--from", "ftp://x/y")
    assert code == 2
    assert assert_one_plain_line(err) == "volsafe: error: ftp://x/y: unknown backend scheme 'ftp' (use a path, file:// or s3://)"


@pytest.mark.docker
def test_backend_failures_of_commands_that_need_docker(volsafe, s3_http):
    url = "s3://volsafe-test-no-such-bucket/p"
    restored = volsafe("restore", "db", "--from", url, "--to-volume", "volsafe-test-never-made")
    assert restored.code == 1
    assert assert_one_plain_line(restored.err) == f"volsafe: error: {url}: bucket does not exist"
    overview = volsafe("volumes", "--from", url, "--json")
    assert overview.code == 1 and overview.out == ""
    assert assert_one_plain_line(overview.err) == f"volsafe: error: {url}: bucket does not exist"

