"""Run `textdiff train` under accelerate's FSDP2 on CPU processes (gloo), for tests only.

accelerate supports FSDP only on accelerators; torch's FSDP2 itself runs on CPU with gloo. This
launcher target flips accelerate's state to FSDP after it has set up the gloo process group, so the
loop's sharded code paths (gathered checkpoints, sharded optimizer state, sharded EMA) run here.
"""
import sys

import accelerate.state as state
from accelerate.utils import DistributedType, InitProcessGroupKwargs

import textdiff.training.loop as loop
from textdiff.cli import main

_init = state.AcceleratorState.__init__


def _fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.num_processes > 1:
        self.distributed_type = DistributedType.FSDP  # what accelerate sets on GPUs
        state.PartialState().distributed_type = DistributedType.FSDP  # the collectives (reduce, gather) read this one
        self.fsdp_plugin = fsdp_plugin


state.AcceleratorState.__init__ = _fsdp_on_cpu
loop.accelerator_kwargs = lambda: [InitProcessGroupKwargs(backend="gloo")]

if __name__ == "__main__":
    sys.exit(main())
