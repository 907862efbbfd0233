"""``RLConfig``: the settings of reinforcement-learning post-training (the recipe's ``rl:`` section).

Names follow TRL's ``GRPOConfig`` wherever a TRL user would look for them (``num_generations``,
``num_iterations``, ``beta``, ``epsilon`` / ``epsilon_high``, ``loss_type``, ``scale_rewards``,
``reward_weights``, ``max_prompt_length``, ``max_completion_length``, ``temperature``,
``generation_batch_size``, ``mask_truncated_completions``, ``num_generations_eval``) and d1's
``DiffuGRPOConfig`` for the diffusion-only knobs (``p_mask_prompt``). textdiff's own names are kept
for its decoding (``sampler``, ``steps``, ``block_size``, ``use_cache``).

One optimizer step of RL (phase 2 wires it into the training loop)::

    prompts (a batch of B_p)  ->  rollouts: G = num_generations completions each (B = B_p · G rows)
    rewards r [B] -> group-relative advantages A [B]                (advantages.py)
    old / reference log-probs (no grad)                              (logprob.py)
    repeat num_iterations (μ) times: policy log-probs -> clipped surrogate + β · KL -> update (loss.py)

``objective``:

* ``diffu_grpo`` (d1, Zhao et al. 2025): per-token log-probabilities from ONE forward with the whole
  completion masked and each prompt token masked with probability ``p_mask_prompt``; token-level ratios.
* ``elbo`` (ESPO, Ou et al. 2025; GDPO, Rojas et al. 2025): the sequence log-likelihood replaced by
  its ELBO, estimated with ``elbo_t_samples`` mask rates (stratified when ``antithetic``) and, with
  ``coupled``, each mask paired with its complement (DiffuCoder's coupled sampling); one ratio per
  sequence, exp((ELBO_θ − ELBO_old) / |y|) (TRL's ``importance_sampling_level="sequence"`` form).

Rewards (``reward_funcs``): built-in names of :mod:`textdiff.rl.rewards` or ``module:function``
import paths of the user's own code (importable from the working directory / PYTHONPATH, named in
the recipe; never read from a model or data folder). ``reward_kwargs`` gives a built-in its
arguments, e.g. ``{regex_format: {pattern: "^<answer>.*</answer>$"}}``.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ..dataclass_io import at_least, finite, in_range, not_blank
from ..errors import ConfigError

OBJECTIVES = ("diffu_grpo", "elbo")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
KL_ESTIMATORS = ("k3", "k2")


#: the built-in rewards of :mod:`textdiff.rl.rewards` (named here so a recipe is checked without importing them)
REWARD_NAMES = ("exact_answer", "length", "regex_format", "tag_format")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def check_reward_name(name: str) -> None:
    """One-line error unless ``name`` is a built-in or a ``module:function`` import path (nothing is imported)."""
    if name in REWARD_NAMES:
        return
    if isinstance(name, str) and (name.endswith(".py") or "/" in name or "\\" in name):
        raise ConfigError(f"reward {name!r} looks like a file path; name an importable module:function "
                          "(e.g. my_rewards:score) on your PYTHONPATH")
    if not isinstance(name, str) or not _IMPORT_PATH.match(name):
        raise ConfigError(f"reward {name!r} is neither a built-in ({', '.join(REWARD_NAMES)}) nor a "
                          "module:function import path")



def _default_sampler():
    from ..dataclass_io import resolve_section

    return resolve_section("sampler", {"name": "confidence"}, "rl.sampler")


@dataclass
class RLConfig:
    """Reinforcement learning from verifiable rewards for masked / block diffusion LMs."""

    # ---- the objective ------------------------------------------------------------------------
    objective: Literal["diffu_grpo", "elbo"] = "diffu_grpo"  # per-token one-step estimate (d1) or sequence ELBO (ESPO)
    num_generations: int = 8  # G: completions per prompt (a group)
    num_iterations: int = 1  # μ: policy updates per rollout batch (d1 uses 12 on GSM8K)
    beta: float = 0.04  # KL coefficient to the reference policy (0: no reference pass at all)
    kl_estimator: Literal["k3", "k2"] = "k3"  # k3 = e^δ − δ − 1 (d1 / GRPO), k2 = δ²/2 (ESPO); δ = log π_ref − log π
    epsilon: float = 0.2  # clip range: ratios outside [1 − ε, 1 + ε_high] get no gradient
    epsilon_high: Optional[float] = None  # upper clip (DAPO's clip-higher, e.g. 0.28); None: = epsilon
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "dapo"  # how token terms are averaged (loss.py)
    scale_rewards: Literal["group", "batch", "none"] = "group"  # divide advantages by the group / batch std, or not (Dr. GRPO)
    mask_truncated_completions: bool = False  # completions without EOS get no loss (DAPO)
    # ---- the log-probability estimators (logprob.py) ------------------------------------------
    p_mask_prompt: float = 0.15  # diffu_grpo: each prompt token is masked with this probability (d1)
    elbo_t_samples: int = 1  # elbo: mask rates t drawn per sequence and update (forwards: 2× with coupled)
    antithetic: bool = True  # elbo: stratify the t samples, t_k = (k + u) / K
    coupled: bool = True  # elbo: pair each mask with its complement (every token scored once per pair)
    # ---- rewards (rewards.py) -------------------------------------------------------------------
    reward_funcs: list[str] = field(default_factory=lambda: ["exact_answer"])  # built-in names or module:function
    reward_weights: Optional[list[float]] = None  # one per reward function; None: all 1.0
    reward_kwargs: dict = field(default_factory=dict)  # built-in name -> keyword arguments of its factory
    # ---- data -----------------------------------------------------------------------------------
    prompt_field: str = "prompt"  # the dataset column with the prompt (text, or chat messages)
    max_prompt_length: Optional[int] = 512  # prompts are cut to their last N tokens (None: never)
    # ---- rollouts (rollout.py): textdiff's own decoding ------------------------------------------
    sampler: Any = field(default_factory=_default_sampler, metadata={"registry": "sampler"})  # decoding rule
    temperature: float = 1.0  # overrides sampler.temperature for rollouts (0 = greedy: no exploration)
    max_completion_length: int = 256  # N: new positions per completion
    steps: int = 128  # sampler steps per completion (split evenly across blocks)
    block_size: Optional[int] = 32  # semi-autoregressive blocks (None: one window of N)
    use_cache: Literal["auto", "none", "exact", "prefix", "dual"] = "auto"  # textdiff.contexts.CACHE_MODES; "auto" (exact caches only), "none", or the approximate "prefix" / "dual"
    generation_batch_size: Optional[int] = None  # rows per generate() call (None: all rows of the step)
    # ---- feedback -------------------------------------------------------------------------------
    eval_every: int = 0  # held-out evaluation with the same rewards every N steps (0: never)
    num_generations_eval: int = 1  # completions per held-out prompt
    eval_prompts: int = 64  # held-out prompts per evaluation (the first N of the held-out split)
    eval_temperature: float = 0.0  # decoding temperature of held-out completions (0: greedy, comparable over time)

    def validate(self) -> None:
        at_least("rl", self, 1, "num_generations", "num_iterations", "max_completion_length", "steps",
                 "elbo_t_samples", "num_generations_eval", "eval_prompts")
        at_least("rl", self, 1, "max_prompt_length", "block_size", "generation_batch_size", optional=True)
        at_least("rl", self, 0, "eval_every")
        if self.num_generations < 2:
            raise ConfigError(f"rl.num_generations={self.num_generations}: group-relative advantages need at least 2 "
                              "completions per prompt (a group of 1 has advantage 0)")
        for name in ("beta", "epsilon", "temperature", "eval_temperature"):
            finite(f"rl.{name}", getattr(self, name))
            if getattr(self, name) < 0:
                raise ConfigError(f"rl.{name}={getattr(self, name)} must be >= 0")
        if self.epsilon_high is not None:
            finite("rl.epsilon_high", self.epsilon_high)
            if self.epsilon_high < 0:
                raise ConfigError(f"rl.epsilon_high={self.epsilon_high} must be >= 0")
        if self.epsilon >= 1:
            raise ConfigError(f"rl.epsilon={self.epsilon} must be below 1 (the lower clip bound is 1 − epsilon)")
        in_range("rl.p_mask_prompt", self.p_mask_prompt, 0.0, 1.0)
        if self.block_size is not None and self.max_completion_length % self.block_size:
            raise ConfigError(f"rl.block_size={self.block_size} does not divide rl.max_completion_length="
                              f"{self.max_completion_length}; pick a divisor")
        not_blank("rl.prompt_field", self.prompt_field)
        self._validate_rewards()

    def _validate_rewards(self) -> None:
        if not self.reward_funcs:
            raise ConfigError("rl.reward_funcs is empty; name at least one reward (e.g. [exact_answer]) "
                              "or a module:function of your own")
        for name in self.reward_funcs:
            check_reward_name(name)
        if len(set(self.reward_funcs)) != len(self.reward_funcs):
            raise ConfigError(f"rl.reward_funcs {self.reward_funcs} names a reward twice; use reward_weights to weigh one more")
        if self.reward_weights is not None:
            if len(self.reward_weights) != len(self.reward_funcs):
                raise ConfigError(f"rl.reward_weights has {len(self.reward_weights)} values for {len(self.reward_funcs)} "
                                  "reward functions; give one weight per function")
            for i, w in enumerate(self.reward_weights):
                finite(f"rl.reward_weights[{i}]", w)
        unknown = sorted(set(self.reward_kwargs) - set(self.reward_funcs))
        if unknown:
            raise ConfigError(f"rl.reward_kwargs names {unknown}, which are not in rl.reward_funcs {self.reward_funcs}")
        for name, kwargs in self.reward_kwargs.items():
            if not isinstance(kwargs, dict):
                raise ConfigError(f"rl.reward_kwargs.{name} must be a mapping of keyword arguments, got {kwargs!r}")

    # ---- derived values -------------------------------------------------------------------------
    @property
    def clip_range(self) -> tuple[float, float]:
        """(1 − ε, 1 + ε_high): the ratio range inside which the surrogate has a gradient."""
        high = self.epsilon if self.epsilon_high is None else self.epsilon_high
        return 1.0 - self.epsilon, 1.0 + high

    def weights(self) -> list[float]:
        """One weight per reward function (1.0 each when ``reward_weights`` is None)."""
        return [1.0] * len(self.reward_funcs) if self.reward_weights is None else [float(w) for w in self.reward_weights]

    def rollout_sampler(self):
        """The sampler config for rollouts: ``sampler`` with ``temperature`` set to ``rl.temperature``."""
        return dataclasses.replace(self.sampler, temperature=self.temperature)
