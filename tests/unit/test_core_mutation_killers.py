"""Unit tests written to kill surviving mutants of the pure core (see docs/mutation.md)."""
