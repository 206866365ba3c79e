"""--debug shows volsafe's own debug logs, never AWS credentials: no access key id, no signature,
no session token (botocore's debug logs hold all three)."""

from __future__ import annotations

import logging

import pytest

from backup.cli.logsafe import redact

pytest_plugins = ["tests.support.backend_conformance"]

KEY_ID = "volsafe-debug-key-id-7Qx"  # not AKIA-shaped: the loggers must be quiet, not just redacted
AKIA_KEY_ID = "AKIAVOLSAFETEST12345"
TOKEN = "volsafe-session-token-Zz9"


def _leaks(text: str, *secrets: str) -> list[str]:
    found = [s for s in secrets if s in text]
    return found + [marker for marker in ("Credential=", "Signature=", "X-Amz-Security-Token") if marker in text]


@pytest.mark.parametrize("key_id", [KEY_ID, AKIA_KEY_ID])
def test_debug_list_against_s3_shows_no_credentials(run, bucket, monkeypatch, key_id):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    url = f"s3://{bucket}/p"
    code, out, err = run("--debug", "list", "--from", url, "--json")
    assert code == 0, err
    assert out.strip() == "[]"
    assert _leaks(err, key_id, TOKEN) == []
    code, out, err = run("--debug", "prune", "db", "--from", url, "--keep-last", "1")
    assert code == 0, err
    assert _leaks(err, key_id, TOKEN) == []


def test_debug_still_shows_debug_logs(run, tmp_path, capsys):
    code, _out, err = run("--debug", "list", "--from", str(tmp_path / "none"), "--json")
    assert code == 0
    logging.getLogger("volsafe.test").debug("a debug line")
    assert logging.getLogger().isEnabledFor(logging.DEBUG)
    assert "a debug line" in capsys.readouterr().err


def test_the_scheduler_logging_is_guarded_too(capsys):
    from backup.cli.run_cmd import _setup_logging

    _setup_logging("json", debug=True)
    logging.getLogger("botocore.auth").debug("Signature:\nabc123")
    logging.getLogger("botocore.endpoint").debug("headers: Credential=%s/20260101/us-east-1/s3", KEY_ID)
    logging.getLogger("volsafe.test").warning("key %s leaked", AKIA_KEY_ID)
    err = capsys.readouterr().err
    assert KEY_ID not in err and "abc123" not in err and AKIA_KEY_ID not in err
    assert "key [redacted] leaked" in err


def test_redaction_filter():
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1,
        "Authorization: AWS4-HMAC-SHA256 Credential=%s/20260101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=0123abcd; X-Amz-Security-Token: %s; url ?X-Amz-Signature=ff&x=1",
        (AKIA_KEY_ID, TOKEN), None,
    )
    assert redact(record)
    text = record.getMessage()
    assert AKIA_KEY_ID not in text and TOKEN not in text and "0123abcd" not in text and "=ff" not in text
    assert "Credential=[redacted]" in text and "SignedHeaders=host;x-amz-date" in text
