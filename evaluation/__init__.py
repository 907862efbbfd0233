"""The evaluation harness: runnable suites over the metric functions of :mod:`textdiff.eval`.

``python -m evaluation SUITE.yaml [key=value ...]`` (or ``textdiff eval SUITE.yaml``) runs a suite and
writes ``report.json`` (every figure and the full protocol), ``report.md`` and PNG plots into the
suite's ``output_dir``. Suites live in ``evaluation/suites/``; published results in
``evaluation/results/``. This folder imports textdiff and is never imported by it.
"""
