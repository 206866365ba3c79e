"""Plumbing for chunk streams: read-ahead in a thread, consumers beside a stream, fan-out to
several backends, and running pieces of work concurrently and cancellably."""
