"""Errors that volsafe reports to the user as one line on stderr, with a non-zero exit.

Every one is a ``VolsafeError`` and carries its exit code; the CLI's ``main`` is the one place that
prints them. Storage failures (``storage_backends.BackendError`` and its subclasses) are
VolsafeErrors too, so no caller needs to translate them. The exit codes:

* 0: success.
* 1: a failure (Docker, a backend, a missing volume or backup, a damaged archive, a failed hook);
  also a command that did part of its work (one backend or volume of several failed, verify found a
  bad backup).
* 2: a usage error: the command line (unknown option or command, missing or invalid value), a REF,
  a backend location or the config file is malformed.
* 130: interrupted by Ctrl-C or SIGTERM, after clean-up.
"""

from __future__ import annotations

from storage_backends.errors import VolsafeError as VolsafeError  # the root, shared with storage_backends


class UsageError(VolsafeError):
    """The command line or a reference is malformed."""

    exit_code = 2


class NotFoundError(VolsafeError):
    """A volume, backup or image that the user named does not exist."""


class DockerUnavailable(VolsafeError):
    """The Docker daemon cannot be reached."""


class HelperImageMissing(VolsafeError):
    """The helper image is absent and cannot be pulled."""


class TargetNotEmpty(VolsafeError):
    """A restore target exists with data in it and ``--force`` was not given."""


class TargetInUse(VolsafeError):
    """A restore target is mounted by a running container and neither --stop nor --pause was given."""


class UnsafeTarget(VolsafeError):
    """Writing into a target would write somewhere else too: another volume's data, or a host path
    (a bind device) that the user did not name on the command line."""


class IntegrityError(VolsafeError):
    """An archive does not match its manifest: checksum, size, entry count or format."""


class ManifestError(VolsafeError):
    """A manifest is not valid JSON or lacks required fields."""


class Interrupted(VolsafeError):
    """The user pressed Ctrl-C or volsafe received SIGTERM; clean-up has run."""

    exit_code = 130


class Cancelled(BaseException):
    """Raised in the main thread on SIGINT or SIGTERM, so that every clean-up path runs.

    A BaseException, like KeyboardInterrupt, so that ``except Exception`` never swallows it; but not
    a KeyboardInterrupt, which the CLI framework would turn into a silent exit.
    """

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name
