"""Benchmarks of cekura-scheduler against its simulator: fire lag, idle cost, config, polling, PostgreSQL.

Run ``python -m bench`` (small sizes, a few minutes) or ``python -m bench --full`` (the table of BENCHMARKS.md).
Each figure is measured beside a baseline taken in the same run, and reported as a ratio to it. Nothing here is a
timed test: the machine is shared and noisy, so figures are medians over repeats where that is cheap.
"""
