"""What a recipe section may change in the training loop, as one object (:class:`TrainHooks`).

The loop (:mod:`.loop`) calls ``hooks.before_step`` at the start of every optimizer step and takes the
step's loss terms from ``hooks.nelbo_terms``; the default does nothing and returns
:func:`textdiff.objective.nelbo_terms`. Adaptation of an AR model (:mod:`textdiff.adapt.training`)
anneals the attention and changes the block size there, and trains complementary mask pairs.
"""
from __future__ import annotations

from ..objective import LossTerms, nelbo_terms


class TrainHooks:
    """No-op hooks: the plain training loop."""

    def before_step(self, step: int, model, process) -> None:
        """Called before optimizer step ``step`` (0-based) on the unwrapped model, also after a resume."""

    def nelbo_terms(self, model, process, x0, loss_mask=None, t=None, frozen=None, generator=None) -> LossTerms:
        """The step's per-token NELBO terms (:func:`textdiff.objective.nelbo_terms`)."""
        return nelbo_terms(model, process, x0, loss_mask=loss_mask, t=t, frozen=frozen, generator=generator)
