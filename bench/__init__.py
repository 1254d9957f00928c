"""Benchmarks of Groundwork, run by ``make bench`` (scripts/bench.sh); results in var/bench/results.json."""
