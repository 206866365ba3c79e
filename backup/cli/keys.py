"""Encryption keys for the commands: from their options, else from the config's [encryption] table.

A passphrase comes from --passphrase-file, else $VOLSAFE_PASSPHRASE, else the config's
passphrase_file. Key material is read here and handed to the actions; it is never printed or logged.
"""

from __future__ import annotations

from typing import Any

import typer

from backup.crypto.encryption import (
    Passphrase,
    Recipients,
    configured_identities,
    configured_key,
    decryption_keys,
    one_kind,
    passphrase_from_environment,
    read_identities,
    read_passphrase,
    read_recipients,
)

PASSPHRASE_OPTION = "--passphrase-file"


def identity_option(what: str) -> Any:
    """--identity/-i FILE (repeatable), to decrypt ``what`` ("an encrypted backup")."""
    return typer.Option(
        None, "--identity", "-i", metavar="FILE",
        help=f"age identity file or SSH private key for {what} (repeatable). [default: [encryption] identity_files]",
    )


def passphrase_file_option(help: str) -> Any:
    """--passphrase-file FILE; ``help`` says what the passphrase is for, the defaults are added."""
    return typer.Option(
        None, PASSPHRASE_OPTION, metavar="FILE", help=f"{help} [default: $VOLSAFE_PASSPHRASE, [encryption] passphrase_file]"
    )


def recipients_for(
    state, values: list[str] | None, files: list[str] | None, passphrase_file: str | None = None
) -> Recipients | Passphrase | None:
    """Return the key to encrypt with: the options' recipients or passphrase, else those of the
    environment and config; None for no encryption.

    Raises EncryptionError for a bad recipient, an unreadable file, or both recipients and a
    passphrase at the same level; ConfigError for a bad config.
    """
    if values or files or passphrase_file:
        return one_kind(
            read_recipients(values or [], files or []) if values or files else None,
            read_passphrase(passphrase_file, PASSPHRASE_OPTION) if passphrase_file else None,
        )
    return configured_key(state.config)


def identities_for(state, files: list[str] | None, passphrase_file: str | None = None) -> list | None:
    """Return the keys to decrypt with (identities, and a Passphrase if one is given): the options',
    else the config's; $VOLSAFE_PASSPHRASE counts whenever --passphrase-file is not given. None if
    there are none.

    The config is read only when no option is given. Raises EncryptionError for an unreadable file.
    """
    if not files and not passphrase_file:
        return configured_identities(state.config)
    passphrase = read_passphrase(passphrase_file, PASSPHRASE_OPTION) if passphrase_file else passphrase_from_environment()
    return decryption_keys(read_identities(files or []), passphrase)
