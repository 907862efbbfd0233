"""The decoding a trained model is saved with: a run that starts from a model (``train.init_from``:
a published checkpoint, a converted folder, a run's ``final/``) keeps that model's decoding setup —
its sampler and options, ``generate`` defaults (block size, ...) and stop tokens — unless the recipe
changes them; the chat template travels with the tokenizer files.

The recipe's ``sampler`` section changes only what it names: the same sampler name overrides the
named fields of the base's, another name keeps the base's options that apply to it
(:func:`~textdiff.samplers.base.compose_sampler_spec`). One line says what was kept or changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..config import resolve_section, to_dict
from ..registry import lookup


@dataclass
class Decoding:
    sampler: object  # the sampler config saved with the model
    generation: dict = field(default_factory=dict)  # generate()'s defaults, e.g. {"block_size": 32}
    stop_token_ids: list = field(default_factory=list)  # tokens that end an answer besides EOS
    note: Optional[str] = None  # the line that says what was kept / changed (None: nothing to say)


def base_decoding(published=None, meta: Optional[dict] = None) -> Optional[dict]:
    """``{"sampler", "generation", "stop_token_ids"}`` of the model a run starts from: a loaded
    published checkpoint (``published``) or the ``textdiff.json`` of a textdiff folder (``meta``)."""
    if published is not None:
        return {"sampler": dict(published.sampler), "generation": dict(published.notes.get("generation") or {}),
                "stop_token_ids": list(published.notes.get("stop_token_ids") or [])}
    if meta is not None and meta.get("sampler"):
        return {"sampler": meta["sampler"], "generation": dict(meta.get("generation") or {}),
                "stop_token_ids": list(meta.get("stop_token_ids") or [])}
    return None


def given_sampler_keys(recipe) -> set:
    """The sampler fields the recipe itself set: recorded by :func:`textdiff.config.load_recipe`; for a
    recipe built otherwise, the fields that differ from the sampler's defaults (and its name when it
    is not the default for the process)."""
    given = getattr(recipe, "sampler_given", None)
    if given is not None:
        return set(given)
    from ..samplers.base import default_sampler

    mine = to_dict(recipe.sampler)
    defaults = to_dict(type(recipe.sampler)())
    keys = {k for k in mine if k != "name" and mine[k] != defaults[k]}
    return keys | ({"name"} if keys or mine["name"] != default_sampler(recipe.process) else set())


def run_decoding(recipe, base: Optional[dict]) -> Decoding:
    """The decoding the run's ``final/`` is saved with (see the module docstring)."""
    from ..samplers.base import compose_sampler_spec

    if base is None:
        return Decoding(recipe.sampler)
    given = given_sampler_keys(recipe)
    mine = to_dict(recipe.sampler)
    options = {k: mine[k] for k in given if k != "name"}
    spec, _ = compose_sampler_spec(base["sampler"], mine["name"] if "name" in given else None, options)
    sampler = resolve_section("sampler", spec, "sampler")
    if not lookup("sampler", sampler.name).serves(recipe.process):  # e.g. a process the base model was not made for
        return Decoding(recipe.sampler, base["generation"], base["stop_token_ids"],
                        f"decoding: the base model's sampler {sampler.name!r} cannot serve process {recipe.process.name!r}; "
                        f"saving the recipe's {recipe.sampler.name!r}")
    saved = to_dict(resolve_section("sampler", base["sampler"], "sampler"))
    final = to_dict(sampler)
    changed = [f"{k}={saved.get(k)!r}->{final[k]!r}" for k in final if saved.get(k) != final[k]]
    where = ", ".join(f"{k} {v}" for k, v in [("generate defaults", base["generation"]),
                                              ("stop token ids", base["stop_token_ids"])] if v)
    carried = f"sampler {sampler.name}" + (f", {where}" if where else "")
    note = (f"decoding: the recipe's sampler section changes the base model's: {', '.join(changed)}; kept {carried}"
            if changed else f"decoding: kept the base model's ({carried})")
    return Decoding(sampler, base["generation"], base["stop_token_ids"], note)
