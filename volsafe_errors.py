"""The root of the errors volsafe reports: one line on stderr and an exit code.

It stands apart from both packages so that ``storage_backends``, which never imports ``backup``,
can derive its ``BackendError`` from it: a storage failure is then a ``VolsafeError`` like any
other, caught and reported by the CLI in one place. ``backup.errors`` re-exports it with the rest
of the hierarchy; import it from there.
"""

from __future__ import annotations


class VolsafeError(Exception):
    """A failure the user can act on. ``str(err)`` is the one line that is printed, and
    ``exit_code`` the process's exit status (1 unless a subclass says otherwise)."""

    exit_code = 1
