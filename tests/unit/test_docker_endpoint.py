"""Naming a Docker daemon: URLs, TLS options, DOCKER_* variables and context names. Pure, no daemon."""

from __future__ import annotations

import hashlib
import json

import pytest

from backup.actions.migrate import _sent_stream, plan_targets
from backup.docker.host import DEFAULT_SOCKET, TlsOptions, _tls_config, resolve_endpoint
from backup.errors import IntegrityError, NotFoundError, UsageError


def write_context(config_dir, name, host, tls_files=False, skip_verify=False):
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config_dir / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps(
        {"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": skip_verify}}}
    ))
    if tls_files:
        tls = config_dir / "contexts" / "tls" / digest / "docker"
        tls.mkdir(parents=True)
        for f in ("ca.pem", "cert.pem", "key.pem"):
            (tls / f).write_text("x")
        return tls


def test_urls_pass_through_and_only_network_daemons_are_remote(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert resolve_endpoint("unix:///run/x.sock", env=env).remote is False
    assert resolve_endpoint("ssh://root@host:2222", env=env).remote is True
    assert resolve_endpoint("tcp://10.0.0.1:2376", env=env).remote is True
    assert resolve_endpoint(None, env=env).url == DEFAULT_SOCKET
    assert resolve_endpoint(None, env={**env, "DOCKER_HOST": "tcp://h:1"}).url == "tcp://h:1"


def test_docker_tls_variables_apply_to_tcp_only(tmp_path):
    env = {"HOME": str(tmp_path), "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/certs"}
    tls = resolve_endpoint("tcp://h:2376", env=env).tls
    assert tls == TlsOptions(True, "/certs/ca.pem", "/certs/cert.pem", "/certs/key.pem")
    assert resolve_endpoint("unix:///x.sock", env=env).tls is None


def test_explicit_tls_options_win_and_are_refused_for_non_tcp(tmp_path):
    env = {"HOME": str(tmp_path), "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/certs"}
    mine = TlsOptions(True, "/a/ca.pem", "/a/c.pem", "/a/k.pem")
    assert resolve_endpoint("tcp://h:2376", mine, env=env).tls == mine
    with pytest.raises(UsageError, match="only to tcp://"):
        resolve_endpoint("ssh://h", mine, env=env)


def test_context_names_resolve_like_the_docker_cli(tmp_path):
    config = tmp_path / "dockercfg"
    tls_dir = write_context(config, "prod", "tcp://prod:2376", tls_files=True)
    write_context(config, "box", "ssh://me@box")
    env = {"HOME": str(tmp_path), "DOCKER_CONFIG": str(config)}
    prod = resolve_endpoint("prod", env=env)
    assert prod.url == "tcp://prod:2376" and prod.context == "prod"
    assert prod.tls == TlsOptions(True, str(tls_dir / "ca.pem"), str(tls_dir / "cert.pem"), str(tls_dir / "key.pem"))
    assert resolve_endpoint("box", env=env).url == "ssh://me@box"
    assert resolve_endpoint("default", env=env).url == DEFAULT_SOCKET
    assert resolve_endpoint(None, env={**env, "DOCKER_CONTEXT": "box"}).url == "ssh://me@box"
    (config / "config.json").write_text(json.dumps({"currentContext": "prod"}))
    assert resolve_endpoint(None, env=env).url == "tcp://prod:2376"
    with pytest.raises(NotFoundError, match="no Docker host URL or context named 'nope'"):
        resolve_endpoint("nope", env=env)


def test_tls_config_checks_files(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        _tls_config(TlsOptions(True, str(tmp_path / "missing.pem")))
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(UsageError, match="both a client certificate and its key"):
        _tls_config(TlsOptions(True, str(ca), str(ca), None))
    with pytest.raises(UsageError, match="needs a CA"):
        _tls_config(TlsOptions(True))
    assert _tls_config(TlsOptions(True, str(ca))).verify is True


def test_plan_targets_rules():
    assert plan_targets(["a", "b"], None) == [("a", "a"), ("b", "b")]
    assert plan_targets(["a"], "c") == [("a", "c")]
    with pytest.raises(UsageError):
        plan_targets(["a", "b"], "c")
    with pytest.raises(UsageError):
        plan_targets(["a", "a"], None)


def _tar(*names: str) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


@pytest.mark.parametrize("gzip", [False, True])
def test_sent_stream_hashes_what_it_sends_and_refuses_a_cut_stream(gzip):
    import zlib

    from backup.archive.tar.scanner import TarScanner

    data = _tar("a", "b")
    digest = hashlib.md5()
    sent = b"".join(_sent_stream([data[:700], data[700:]], TarScanner(), digest, lambda n: None, gzip))
    assert digest.hexdigest() == hashlib.md5(data).hexdigest()
    assert (zlib.decompress(sent, 31) if gzip else sent) == data
    pieces = []
    with pytest.raises(IntegrityError):
        for piece in _sent_stream([data[:1024]], TarScanner(), hashlib.sha256(), lambda n: None, gzip):
            pieces.append(piece)
    assert not pieces  # nothing of a cut-short stream goes out before the check
