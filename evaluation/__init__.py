"""Published evaluation results (``results/``) and the SFT accuracy script. The harness itself is
:mod:`textdiff.harness` (``textdiff eval SUITE``); ``python -m evaluation`` forwards to it."""
