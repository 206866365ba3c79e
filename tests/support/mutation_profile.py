"""pytest plugin for scripts/mutation (``-p tests.support.mutation_profile``, set in pyproject.toml).

Every mutant runs the tests that cover it, so the property-based tests set the pace. Here they get
a smaller, fixed budget: derandomized (the same examples for every mutant and every run, so a
verdict does not change from one run to the next), no example database, no deadline (a mutant may
be slow without being wrong). Tests with their own ``@settings`` keep what they set.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "volsafe-mutation",
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
settings.load_profile("volsafe-mutation")


def pytest_collection_modifyitems(items) -> None:
    """Run the fastest tests first, by the durations mutmut recorded in its stats run.

    With ``-x`` a killed mutant's session ends at the first failing test, so most mutants then cost
    one quick unit test instead of every slow property test that happens to come first in the file.
    The verdict does not change: only survivors run every test, and they run them all either way.
    """
    import json
    from pathlib import Path

    try:  # mutmut runs the tests inside mutants/, beside its stats
        durations = json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return  # the stats run itself: nothing recorded yet
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
