"""Streaming tar readers: the scanner that checks every entry, and the exclude filter."""
