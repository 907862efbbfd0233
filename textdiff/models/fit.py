"""Whether a model folder's ``textdiff.json`` fits the network beside it, checked once when the folder
is loaded (not at the first ``generate``, and never silently): the process must be one the network
can serve (time conditioning, the attention the process needs, block size), and the sampler must
serve the process. Also the one warning for an attention that works but defeats the process: a
diffusion process decoded by a causal network (each [MASK] sees only the text before it).
"""
from __future__ import annotations

from ..errors import IncompatibleError, TextDiffError, warn
from ..processes.base import causal_diffusion_note


def check_folder_pipeline(model, process, sampler_config, origin) -> None:
    """Raise a one-line IncompatibleError naming ``origin`` (the folder's textdiff.json) when its
    process or sampler does not fit ``model``; warn once for a causal network under a diffusion process."""
    from ..generation import check_compatible
    from ..samplers.base import build_sampler

    config = model.config
    have = getattr(config, "attention", None)
    try:
        check_compatible(model, process)
        need = process.required_attention
        if need is not None and have is not None and need != have:
            raise IncompatibleError(f"process {process.config.name!r} needs {need} attention but the network has {have}")
        if have is not None:
            process.check_model(config)
        build_sampler(sampler_config, process)
    except TextDiffError as e:
        raise IncompatibleError(f"{origin} does not fit the network beside it: {str(e).rstrip('.')}; set its process "
                                "and sampler to the ones the model was trained with (or re-save the model)") from None
    note = causal_diffusion_note(process.config.name, have, process.is_diffusion, process.required_attention)
    if note is not None:
        warn(f"{origin}: {note}")


def check_dtype(dtype, device, device_map=None) -> None:
    """``dtype`` of ``from_pretrained``: None or a torch floating dtype (one-line error otherwise);
    float16 on a CPU is accepted with one warning line (CPU kernels compute half precision slowly or
    not at all, and its range overflows where bfloat16's does not)."""
    import torch

    if dtype is None:
        return
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise IncompatibleError(f"dtype must be a torch floating dtype such as torch.bfloat16 or torch.float32, got "
                                f"{type(dtype).__name__} {dtype!r:.40}")
    on_cpu = device_map in ("cpu", None) and str(device or "cpu").startswith("cpu")
    if dtype == torch.float16 and on_cpu:
        warn("dtype=float16 on CPU: CPU kernels run half precision slowly (some not at all) and float16 overflows "
             "where bfloat16 does not; use torch.bfloat16 or torch.float32 on CPU")
