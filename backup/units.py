"""Pure formatting of quantities for people."""

from __future__ import annotations


def human_size(size: int) -> str:
    """Return ``size`` bytes as a short human-readable string, e.g. ``12.3 MB`` (powers of 1000)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
