"""The progress bar's totals without a daemon: the scan's output, an estimate that was too low, the entries column."""

from __future__ import annotations

import io

from rich.console import Console

from backup.docker.size_scan import parse_scan
from backup.progress import RichReporter, _entries_text


def test_parse_scan_takes_the_marker_line_only():
    assert parse_scan("noise\nvolsafe-size 51251712 50101\n") == (51251712, 50101)
    assert parse_scan("find: ./x: Permission denied\n") is None
    assert parse_scan("volsafe-size 12 x\n") is None


def test_a_total_that_was_too_low_grows_with_what_was_done(monkeypatch):
    bars = []
    real_new_bar = RichReporter._new_bar

    def quiet_bar():
        bar = real_new_bar()
        bar.live.console = Console(file=io.StringIO(), force_terminal=True)
        bars.append(bar)
        return bar

    monkeypatch.setattr(RichReporter, "_new_bar", staticmethod(quiet_bar))
    with RichReporter().task("backup x") as task:
        task(100, entries=3)
        task.set_total(150, entries=5)
        (state,) = bars[0].tasks
        assert (state.total, state.completed, round(state.percentage)) == (150, 100, 67)
        assert _entries_text(state) == "3/5 entries"
        task(100, entries=9)
        assert (state.total, state.completed, state.percentage) == (200, 200, 100.0)  # never over 100%
        task.set_total(120)  # a late estimate below what was done already
        assert state.total == 200


def test_entries_text_without_total_or_count():
    class Fake:
        fields: dict = {}

    assert _entries_text(Fake()) == ""
    Fake.fields = {"entries": 1234}
    assert _entries_text(Fake()) == "1,234 entries"
