"""Hypothesis runs every unit property without its 200 ms deadline: a garbage-collection pause
alone took single examples to 145 ms on an idle machine, and a loaded CI machine past 250 ms
fails the example as "Flaky" when its replay is fast. Slowness is the benchmarks' to measure."""

from hypothesis import settings

settings.register_profile("unit", deadline=None)
settings.load_profile("unit")
