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
