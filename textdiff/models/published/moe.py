"""Shared by the mixture-of-experts families (LLaDA-MoE, LLaDA 2.0): the expert stacking rules, the
mask token found in config.json or the tokenizer, and the tokens that end an answer."""
from __future__ import annotations

from ...errors import ConfigError
from ..weights import Stack


def expert_stacks(experts: int, layer: str = r"model\.layers\.(\d+)\.mlp\.experts\.") -> list:
    """Each sparse layer's per-expert projections ``...experts.j.{gate,up,down}_proj.weight`` stacked into
    transformers' fused ``gate_up_proj`` [E, 2I, d] (rows [gate; up]) and ``down_proj`` [E, d, I]."""
    target = "model.layers.\\1.mlp.experts."
    return [Stack(layer + r"(\d+)\.(gate|up)_proj\.weight", target + "gate_up_proj", count=experts, parts=("gate", "up")),
            Stack(layer + r"(\d+)\.down_proj\.weight", target + "down_proj", count=experts)]


def find_mask_token_id(config: dict, tokenizer, tokens: tuple, default: str) -> int:
    """config.json's mask_token_id, else the tokenizer's mask token, else the first of ``tokens`` it has."""
    if config.get("mask_token_id") is not None:
        return int(config["mask_token_id"])
    if tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id)
    for token in tokens:
        found = tokenizer.convert_tokens_to_ids(token)
        if isinstance(found, int) and found != tokenizer.unk_token_id:
            return found
    raise ConfigError(f"neither config.json nor the tokenizer names a mask token (this model's is {tokens[0]}); "
                      f"pass the tokenizer this model was released with ({default})")


def stop_token_ids(tokenizer, config: dict, end_of_turn: str) -> list[int]:
    """The tokenizer's EOS, config.json's eos ids and the chat template's ``end_of_turn`` token."""
    eos = config.get("eos_token_id")
    ids = [tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos]), tokenizer.convert_tokens_to_ids(end_of_turn)]
    out = []
    for i in ids:
        if isinstance(i, int) and i != tokenizer.unk_token_id and i < len(tokenizer) and i not in out:
            out.append(i)
    return out
