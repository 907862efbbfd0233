"""``textdiff serve``: an OpenAI-compatible HTTP server for textdiff models (``pip install 'textdiff[serve]'``).

=================  ==============================================================================
``app``            the HTTP layer (FastAPI): routes, API key, streaming, errors, timeouts
``protocol``       request bodies (strict) and OpenAI-style error bodies
``admission``      request -> engine rows: tokens, chat template, sampler, context, seeds
``engine``         the engine boundary (rows, events) and the phase-1 batch scheduler
``continuous``     the continuous-batching engine ``textdiff serve`` uses: rows join / leave at step boundaries
``calls``          the adapter to generation: parked model calls, merged into one forward per step
``runner``         rows through ``DiffusionLM.generate``; final prefixes for streaming
``text``           answer text: stop strings, deltas that never split a character
``metrics``        ``/metrics`` in Prometheus' text format
``server``         uvicorn with graceful shutdown; a server thread for tests and benchmarks
=================  ==============================================================================

The modules importing FastAPI / uvicorn / prometheus_client are only imported by ``textdiff serve``
(:func:`require_extra` first names the extra when they are missing). See ``docs/serving.md``.
"""


def require_extra() -> None:
    """Raise a one-line error naming ``textdiff[serve]`` when its packages are missing."""
    from ..eval.common import require

    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module, "serve", "textdiff serve")
