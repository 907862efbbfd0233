"""Denoiser networks: the textdiff transformer (registered with the transformers Auto classes)."""
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from .cache import KVCache
from .configuration_textdiff import TextDiffConfig
from .modeling_textdiff import TextDiffModel, TextDiffOutput

AutoConfig.register("textdiff", TextDiffConfig, exist_ok=True)
AutoModel.register(TextDiffConfig, TextDiffModel, exist_ok=True)
# the denoiser predicts a token at every position from a partly masked input: a masked LM
AutoModelForMaskedLM.register(TextDiffConfig, TextDiffModel, exist_ok=True)

__all__ = ["KVCache", "TextDiffConfig", "TextDiffModel", "TextDiffOutput"]
