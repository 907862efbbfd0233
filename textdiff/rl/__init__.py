"""Reinforcement-learning post-training of masked diffusion LMs (diffu-GRPO and sequence-ELBO policy
gradients), in parts that the training loop composes:

* :mod:`.config`: ``RLConfig`` (TRL's ``GRPOConfig`` names where they exist);
* :mod:`.rollout`: grouped, per-row-seeded rollouts through :func:`textdiff.generation.generate`;
* :mod:`.rewards`: built-in verifiable rewards and the loader for the user's ``module:function``;
* :mod:`.advantages`: group-relative advantages;
* :mod:`.logprob`: the one-step per-token estimate (d1) and the sequence ELBO (ESPO / GDPO);
* :mod:`.loss`: clipped surrogate, KL to the reference, clip fractions.
"""
from .config import RLConfig  # noqa: F401
