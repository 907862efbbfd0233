"""The sampler interface shared by every sampler.

A sampler is bound to a forward process and reads the denoiser's logits through it. The generation
loop owns the model call and the blocks/caches; a sampler only sees one window::

    sampler.set_timesteps(num_steps)             # the time grid 1 = t_0 > t_1 > ... > t_N = 0
    sampler.begin(x_t, generator)                # optional: a grid that depends on the state
    for t, s in sampler.pairs():                 # consecutive (t, s) with s < t
        if sampler.finished(x_t): break          # optional early exit (nothing left to do)
        logits = model(x_t, t)                   # the loop calls the model
        x_t = sampler.step(logits, t, s, x_t, generator).x_s

Per-sampler knobs live in the sampler's config dataclass (which round-trips through JSON), never as
extra ``step`` arguments. Every categorical draw is float64 (see :mod:`textdiff.categorical`); the
row-wise draws every sampler shares are in :mod:`.draws`, temperature / top-k / top-p in :mod:`.filters`.

Which processes a sampler serves is ONE rule, :meth:`Sampler.serves`: the sampler's ``requires``
against the capabilities the process DECLARES (:class:`~textdiff.processes.base.ForwardProcess`), from
the process's class or config alone, so a recipe is checked before any model exists.

Time grids: ``timesteps`` is either one grid ``[N + 1]`` shared by all rows (``pairs()`` gives python
floats) or one grid per row ``[B, N + 1]`` (``pairs()`` gives ``[B]`` float64 tensors). Per-row grids
serve samplers whose times are random and state dependent, e.g. first-hitting sampling, whose grid
is drawn in :meth:`Sampler.begin` once the sampler sees the window. ``t`` and ``s`` reaching ``step``
are always ``[B]`` tensors (the generation loop broadcasts floats).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import torch

from ..categorical import Generator
from ..dataclass_io import make_config
from ..errors import ConfigError, IncompatibleError
from ..processes.base import ForwardProcess, process_class
from ..registry import available, lookup
from ..signatures import checked, checked_config
from .filters import LogitFilter


@dataclass
class SamplerConfig:
    name: str = "ancestral"
    temperature: float = 1.0  # divides the clean-token logits (0 = greedy)
    top_k: Optional[int] = None  # keep the k most likely clean tokens
    top_p: float = 1.0  # nucleus: keep the smallest set with this much mass

    def validate(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"sampler.temperature={self.temperature} must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"sampler.top_p={self.top_p} must be in (0, 1]")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"sampler.top_k={self.top_k} must be at least 1")


@dataclass
class StepOutput:
    x_s: torch.Tensor  # [B, L] the sample at the earlier time s
    x0_pred: Optional[torch.Tensor] = None  # [B, L] the sampler's current guess of the clean tokens


class Sampler(ABC):
    """Base class. Subclasses set ``requires`` (the process capabilities they need) and ``revises``."""

    config_class: ClassVar[type] = SamplerConfig

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        checked_config(cls)  # AncestralConfig(bad_keyword=...) is a one-line ConfigError
    #: capabilities a process must DECLARE for this sampler to serve it: attribute of
    #: :class:`~textdiff.processes.base.ForwardProcess` -> required value (:meth:`serves`)
    requires: ClassVar[dict[str, Any]] = {}
    #: True if a committed (clean) token may change again (ReMDM-style remasking)
    revises: ClassVar[bool] = False
    #: False when the number of steps is not a knob of this sampler (first hitting: one step per mask)
    uses_steps: ClassVar[bool] = True
    #: True if ``step`` reads the logits of committed positions too (token editing): the loop then
    #: computes every row of the window, not only the noisy ones
    reads_committed: ClassVar[bool] = False

    def __init__(self, config: SamplerConfig, process):
        config.validate()
        type(self).check_serves(process, config.name)
        self.config = config
        self.process = process
        #: temperature / top-k / top-p of ``config``
        self.filter = LogitFilter(config)
        self.timesteps: Optional[torch.Tensor] = None

    # ---- which processes ----------------------------------------------------------------------
    @classmethod
    def serves(cls, process) -> bool:
        """Whether this sampler can sample ``process``: a process, its class, or its config, name or
        mapping (before any model exists). The one compatibility rule: every capability in
        ``requires`` has the required value in the process's declarations."""
        declared = process_class(process)
        return all(getattr(declared, capability) == value for capability, value in cls.requires.items())

    @classmethod
    def check_serves(cls, process, name: Optional[str] = None) -> None:
        """Raise a one-line :class:`~textdiff.errors.IncompatibleError` unless :meth:`serves`; it names
        the processes this sampler works with."""
        if cls.serves(process):
            return
        proc = process.config.name if isinstance(process, ForwardProcess) else process_class(process).registered_name
        fits = [p for p in available("process") if cls.serves(p)]
        raise IncompatibleError(f"sampler {name or cls.registered_name!r} cannot serve process {proc!r}; it works "
                                f"with: {', '.join(fits)} (set sampler.name to one made for it)")

    @property
    def skips_unchanged(self) -> bool:
        """Whether the loop may reuse the last logits when x_t did not change (cached-NFE): only for
        a sampler that asks for it and a denoiser that ignores t. Default False."""
        return False

    # ---- time grid ----------------------------------------------------------------------------
    def set_timesteps(self, num_steps: int, device=None) -> None:
        """Uniform grid t_i = 1 − i / N, i = 0..N (N + 1 points, N steps)."""
        if num_steps < 1:
            raise ConfigError(f"steps={num_steps} must be at least 1")
        self.num_steps = int(num_steps)
        self.timesteps = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64, device=device)

    def begin(self, x_t: torch.Tensor, generator: Generator = None) -> Optional[torch.Tensor]:
        """Called once per window after :meth:`set_timesteps`, with the initial x_t [B, L].

        The default does nothing; a sampler whose grid depends on the state (first-hitting) draws it
        here, replacing ``timesteps`` with a per-row grid [B, N + 1]. A sampler that draws the window's
        starting state itself returns it ([B, L]; the loop keeps the frozen positions).
        """
        return None

    def denoiser_inputs(self) -> dict:
        """Extra keyword inputs of the next model call (e.g. DiffusionGemma's self-conditioning
        logits, :mod:`.entropy_bound`); default none."""
        return {}

    def end(self, x_t: torch.Tensor) -> torch.Tensor:
        """The window's result once its steps are done (default: x_t [B, L] as it is)."""
        return x_t

    def pairs(self):
        """Consecutive (t, s) of the grid, s <= t: floats for a shared grid, [B] tensors per row."""
        if self.timesteps is None:
            raise ConfigError("call set_timesteps(num_steps) before sampling")
        if self.timesteps.dim() == 2:  # one grid per row
            cols = self.timesteps.unbind(1)
            return list(zip(cols[:-1], cols[1:]))
        ts = self.timesteps.tolist()
        return list(zip(ts[:-1], ts[1:]))

    def finished(self, x_t: torch.Tensor) -> bool:
        """True when further steps cannot change x_t [B, L] (the loop may stop early). Default False."""
        return False

    def _no_noise_left(self, x_t: torch.Tensor) -> bool:
        """For absorbing processes: no [MASK] left, so a non-revising sampler has nothing to do."""
        return self.process.graph == "absorbing" and not bool(self.process.is_noise(x_t).any())

    # ---- the step -----------------------------------------------------------------------------
    @abstractmethod
    def step(self, logits: torch.Tensor, t, s, x_t: torch.Tensor, generator: Generator = None) -> StepOutput:
        """Move x_t [B, L] at time t to x_s at time s < t using the denoiser's ``logits`` [B, L, V]."""

    # ---- helpers ------------------------------------------------------------------------------
    @staticmethod
    def rows(t, x_t: torch.Tensor) -> torch.Tensor:
        """A time given as a float, a [] or a [B] tensor -> [B] float64 on x_t's device."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device)
        return t.expand(x_t.shape[0]) if t.dim() == 0 else t.reshape(x_t.shape[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


@checked
def build_sampler(spec: Any, process) -> Sampler:
    """A sampler from a name, a mapping with ``name`` or a sampler config, bound to ``process``;
    raises :class:`~textdiff.errors.IncompatibleError` if it cannot serve the process."""
    if not isinstance(process, ForwardProcess):
        raise ConfigError(f"build_sampler needs the built process (build_process(...) or lm.process), got "
                          f"{type(process).__name__} {process!r:.60}")
    cfg = make_config("sampler", spec)
    return lookup("sampler", cfg.name)(cfg, process)


def default_sampler(process) -> str:
    """The sampler a recipe gets when it names none: ``ancestral`` when it serves the process, else
    the first sampler (by name) that does (SEDD: ``analytic``); ``ancestral`` when none does (the
    recipe check then says why)."""
    for name in ["ancestral"] + available("sampler"):
        if lookup("sampler", name).serves(process):
            return name
    return "ancestral"


def compose_sampler_spec(saved: Any, sampler: Any = None, options: Optional[dict] = None) -> tuple[dict, list[str]]:
    """The sampler spec a model decodes with when the caller picks ``sampler`` and ``options`` over the
    model's ``saved`` sampler config; returns ``(spec, kept)``, ``kept`` the fields carried from ``saved``
    to a sampler of another name.

    - ``sampler`` None or the saved sampler's name: the saved config, with ``options`` over it;
    - another NAME: that sampler's defaults, then every saved field its config also has (a family's
      greedy ``temperature=0`` stays 0 from ``confidence`` to ``threshold``), then ``options``;
    - a mapping with ``name`` or a config object: the whole spec as given (defaults for the rest), then
      ``options``.

    ``kept`` lists the carried fields whose value differs from the new sampler's default. Unknown option names are one-line :class:`~textdiff.errors.ConfigError` s listing the sampler's fields.
    """
    import dataclasses

    from ..dataclass_io import to_dict

    saved = to_dict(make_config("sampler", saved)) if saved is not None else {"name": "ancestral"}
    options = dict(options or {})
    if "name" in options:
        raise ConfigError("a sampler option cannot be 'name'; pick the sampler with sampler= / --sampler")
    kept: list[str] = []
    if sampler is None or sampler == saved["name"]:
        spec = dict(saved)
    elif isinstance(sampler, str):
        defaults = to_dict(make_config("sampler", sampler))
        shared = [k for k in saved if k in defaults and k != "name"]
        kept = sorted(k for k in shared if saved[k] != defaults[k])  # what the switch would otherwise reset
        spec = {"name": sampler, **{k: saved[k] for k in shared}}
    else:
        spec = to_dict(make_config("sampler", sampler))
    cls = type(make_config("sampler", spec["name"]))
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"sampler {spec['name']!r}: unknown key(s) {unknown}; its options are "
                          f"{sorted(known - {'name'})} (check the spelling)")
    spec.update(options)
    return spec, [k for k in kept if k not in options]


def describe_sampler(config: Any, kept: Sequence[str] = (), source: str = "") -> str:
    """One line naming a sampler config and the fields that differ from its defaults (temperature
    always), e.g. ``sampler: threshold temperature=0.0 threshold=0.9 (kept from the model's confidence
    sampler: temperature)``."""
    import dataclasses

    defaults = type(config)()
    shown = [f"{f.name}={getattr(config, f.name)!r}" for f in dataclasses.fields(config)
             if f.name != "name" and (f.name == "temperature" or getattr(config, f.name) != getattr(defaults, f.name))]
    line = f"sampler: {config.name} " + " ".join(shown)
    if kept:
        line += f" (kept from the model's {source or 'saved'} sampler: {', '.join(kept)})"
    return line


def unused_steps_note(steps, sampler: "Sampler", process) -> Optional[str]:
    """Why an explicit ``steps`` will not be used, or None: the sampler does not take a number of steps
    (first hitting), or the process decodes one token per step (autoregressive)."""
    if steps is None:
        return None
    if not process.is_diffusion or getattr(process, "logits_shift", 0):
        return (f"steps={steps} is not used: process {process.config.name!r} decodes one token per step "
                "(max_new_tokens steps); drop steps")
    if not type(sampler).uses_steps:
        return (f"steps={steps} is not used: sampler {sampler.config.name!r} takes one step per masked position; "
                "drop steps (or pick a sampler with a step count, e.g. ancestral)")
    return None



checked_config(Sampler)  # SamplerConfig(...) itself
