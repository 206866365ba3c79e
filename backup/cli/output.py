"""Rendering results for stdout: a plain aligned table for people, JSON for scripts."""

from __future__ import annotations

import json
from typing import Any, Sequence

import typer

from backup.archive.hosts import shown
from backup.archive.manifest import Manifest, format_time
from backup.units import human_size
from storage_backends import Backend


def backup_record(manifest: Manifest, backend: Backend) -> dict[str, Any]:
    """Return the JSON object that ``list --json`` and ``backup --json`` print for one backup.

    ``size`` (tar bytes) and ``entries`` are null for an encrypted backup read from a store: its
    manifest keeps them sealed.
    """
    return {
        "id": str(manifest.backup_id),
        "volume": manifest.volume,
        "created": format_time(manifest.created),
        "size": manifest.tar_size,
        "stored_size": manifest.stored_size,
        "backend": backend.url,
        "entries": manifest.entries,
        "sha256": manifest.sha256,
        "compression": manifest.compression,
        "source_host": manifest.source_hostname,
        "source_docker_id": manifest.source_docker_id,
        "volsafe_version": manifest.volsafe_version,
    }


def _size(size: int | None) -> str:
    # An encrypted backup's tar size is sealed in its manifest: not known without the key.
    return human_size(size) if size is not None else "-"


def print_json(records: list[dict[str, Any]] | dict[str, Any]) -> None:
    """Print ``records`` (a JSON array, or one object) as JSON on stdout."""
    typer.echo(json.dumps(records, indent=2))


def print_table(headers: list[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a left-aligned table with a header row on stdout."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        typer.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())


def print_backups(records: list[dict[str, Any]]) -> None:
    """Print backup records as the people-facing table of ``list`` and ``backup``."""
    rows = [
        [r["id"], r["volume"], shown(r["source_host"]), r["created"], _size(r["size"]), human_size(r["stored_size"]), r["backend"]]
        for r in records
    ]
    print_table(["ID", "VOLUME", "HOST", "CREATED", "SIZE", "STORED", "BACKEND"], rows)
