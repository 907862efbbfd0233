"""The evaluation harness: runnable suites over the metric functions of :mod:`textdiff.eval`.

``textdiff eval SUITE [key=value ...]`` (or ``python -m textdiff.harness ...``) runs a suite (a YAML
file, or a shipped suite by name: ``quickstart``, ``zero_shot``, ``process_comparison``, package data
in ``suites/``) and writes ``report.json`` (every figure and the full protocol), ``report.md`` and PNG
plots into the suite's ``output_dir`` (default ``runs/eval/<name>`` under the working directory).
Relative paths in a suite resolve from the working directory; nothing is imported from it.
"""
