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
