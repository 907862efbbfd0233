"""Reinforcement-learning post-training of masked diffusion LMs (diffu-GRPO and sequence-ELBO policy
gradients), in parts that the training loop composes:

* :mod:`.config`: ``RLConfig`` (TRL's ``GRPOConfig`` names where they exist);
* :mod:`.rollout`: grouped, per-row-seeded rollouts through :func:`textdiff.generation.generate`;
* :mod:`.rewards`: built-in verifiable rewards and the loader for the user's ``module:function``;
* :mod:`.advantages`: group-relative advantages;
* :mod:`.logprob`: the one-step per-token estimate (d1) and the sequence ELBO (ESPO / GDPO);
* :mod:`.loss`: clipped surrogate, KL to the reference, clip fractions.

What comes from TRL (``GRPOTrainer`` / ``GRPOConfig``), and what does not:

* taken: the config names a TRL user looks for; the reward-function signature
  ``f(prompts, completions, **kwargs) -> list[float | None]`` with dataset columns as keyword
  arguments, ``completion_ids``, conversational completions ``[{"role": "assistant", ...}]`` and None
  for "does not apply"; the ``prompt`` column holding text or chat messages; the group layout (G
  consecutive rows per prompt), the advantage formula (``scale_rewards``), the ``loss_type``
  aggregations and the clip-ratio metric definitions. Reward helpers of TRL itself
  (``trl.rewards:think_format_reward``, ``trl.rewards:get_soft_overlong_punishment`` ...) can be
  named in ``rl.reward_funcs`` when TRL is installed: ``trl.rewards`` imports without the trainer.
* not taken: ``GRPOTrainer`` (a ``transformers.Trainer`` built around autoregressive generation and
  next-token log-softmax; d1, ESPO and DiffuCoder subclass it and replace its generation, log-probs
  and loss, keeping only the HF loop, which textdiff has its own of, with exact resume) and
  ``GRPOConfig`` (a ``TrainingArguments`` subclass). TRL is not a dependency.
"""
from .config import RLConfig  # noqa: F401
