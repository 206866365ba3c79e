"""The root of the errors volsafe reports: one line on stderr and an exit code.

It lives in ``storage_backends``, the lower of the two packages, because that package never imports
``backup``: its ``BackendError`` derives from this root, so a storage failure is a ``VolsafeError``
like any other, caught and reported by the CLI in one place. ``backup.errors`` re-exports it with
the rest of the hierarchy; import it from there.
"""

from __future__ import annotations


class VolsafeError(Exception):
    """A failure the user can act on. ``str(err)`` is the one line that is printed, and
    ``exit_code`` the process's exit status (1 unless a subclass says otherwise)."""

    exit_code = 1
