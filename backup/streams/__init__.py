"""Plumbing for chunk streams: the bounded channel every thread hand-off goes through, read-ahead in
a thread, consumers beside a stream, fan-out to several backends, and running pieces of work
concurrently and cancellably."""
