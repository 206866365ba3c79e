"""Keep secrets out of stderr logs, --debug included.

botocore's debug logs hold the access key id (``Credential=AKIA…/…``), request signatures, the
canonical request with any session token, and urllib3's the full request lines; so under --debug
those libraries still log at WARNING only. A filter on the handler redacts AWS credential fragments
from whatever else reaches it.
"""

from __future__ import annotations

import logging
import re

LEAKY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")

_SECRETS = re.compile(
    r"(?i:((?:x-amz-)?credential=|(?:x-amz-)?signature=|x-amz-security-token[=:]\s*|aws_access_key_id[=:]\s*))[^\s,;&'\"]+"
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"
)


def redact(record: logging.LogRecord) -> bool:
    """Logging filter: replace credential fragments in the record's message; never drops a record."""
    text = record.getMessage()
    cleaned = _SECRETS.sub(lambda m: (m.group(1) or "") + "[redacted]", text)
    if cleaned != text:
        record.msg, record.args = cleaned, None
    return True


def guard(handler: logging.Handler, debug: bool) -> None:
    """Add the redacting filter to ``handler``; with ``debug``, hold the leaky loggers at WARNING."""
    if debug:
        for name in LEAKY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    handler.addFilter(redact)
