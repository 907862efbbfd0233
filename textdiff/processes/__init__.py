"""Forward processes. Importing this package registers every built-in process; the registry imports
it on the first lookup of a built-in name (:data:`textdiff.registry.BUILTINS`)."""
from .base import ForwardProcess, ProcessConfig, build_process, process_class
from .masked import MaskedConfig, MaskedProcess
from .block import BlockConfig, BlockProcess
from .uniform import UniformConfig, UniformProcess
from .score_entropy import ScoreEntropyConfig, ScoreEntropyProcess
from .autoregressive import AutoregressiveConfig, AutoregressiveProcess

__all__ = ["ForwardProcess", "ProcessConfig", "build_process", "process_class", "MaskedConfig", "MaskedProcess", "BlockConfig", "BlockProcess",
           "UniformConfig", "UniformProcess", "ScoreEntropyConfig", "ScoreEntropyProcess",
           "AutoregressiveConfig", "AutoregressiveProcess"]
