"""Encryption keys for the commands: from their options, else from the config's [encryption] table.

Key material is read here and handed to the actions; it is never printed or logged.
"""

from __future__ import annotations

from backup.encryption import Recipients, read_identities, read_recipients


def recipients_for(state, values: list[str] | None, files: list[str] | None) -> Recipients | None:
    """Return the recipients to encrypt for: the options', else the config's; None for no encryption.

    Raises EncryptionError for a bad recipient or unreadable file, ConfigError for a bad config.
    """
    if values or files:
        return read_recipients(values or [], files or [])
    config = state.config
    return read_recipients(config.encryption_recipients, config.encryption_recipients_files)


def identities_for(state, files: list[str] | None) -> list | None:
    """Return the identities to decrypt with: the options' files, else the config's; None if none.

    The config is read only when no option is given. Raises EncryptionError for an unreadable file.
    """
    files = list(files or []) or list(state.config.identity_files)
    return read_identities(files) if files else None
