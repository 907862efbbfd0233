"""Denoiser networks: the textdiff transformer (registered with the transformers Auto classes)."""
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from .cache import KVCache
from .configuration_textdiff import TextDiffConfig
from .modeling_bidirectional import NATIVE_CLASSES
from .modeling_moe import MOE_CLASSES
from .modeling_textdiff import TextDiffModel, TextDiffOutput

AutoConfig.register("textdiff", TextDiffConfig, exist_ok=True)
AutoModel.register(TextDiffConfig, TextDiffModel, exist_ok=True)
# the denoiser predicts a token at every position from a partly masked input: a masked LM
AutoModelForMaskedLM.register(TextDiffConfig, TextDiffModel, exist_ok=True)
# transformers' own decoders run bidirectionally (LLaDA on Llama, Dream on Qwen2): see modeling_bidirectional
# ... and transformers' Qwen3-MoE (LLaDA-MoE): see modeling_moe
for _config_class, _model_class in (*NATIVE_CLASSES.values(), *MOE_CLASSES.values()):
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    AutoModelForMaskedLM.register(_config_class, _model_class, exist_ok=True)

#: config.json model_types that textdiff loads natively from a folder with textdiff.json
NATIVE_MODEL_TYPES = ("textdiff", *NATIVE_CLASSES, *MOE_CLASSES)

__all__ = ["NATIVE_MODEL_TYPES", "KVCache", "TextDiffConfig", "TextDiffModel", "TextDiffOutput"]
