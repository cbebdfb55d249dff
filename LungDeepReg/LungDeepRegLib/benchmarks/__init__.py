"""Benchmarks: the same registration methods run side by side on sets of cases.

``lungdeepreg bench synthetic | pairs | dirlab | copdgene`` (see :mod:`..cli.bench`).
Every set of cases becomes a list of :class:`~.case.BenchCase` (or :class:`~.case.CaseError`
for a case that could not be read); one runner registers each case with each method in its
own subprocess (wall time and peak memory per method), evaluates every method the same way
and writes JSON, CSV, a Markdown table and cumulative TRE plots.
"""
