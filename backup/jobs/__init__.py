"""Scheduled jobs: schedule syntax (``schedule``), the scheduler loop (``scheduler``), retention rules
(``retention``, pure), and the status file, ``/health``, ``/metrics`` and webhook (``health``)."""
