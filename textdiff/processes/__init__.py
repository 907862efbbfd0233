"""Forward processes. Importing this package registers every built-in process."""
from .base import ForwardProcess, ProcessConfig
from .masked import MaskedConfig, MaskedProcess
from .block import BlockConfig, BlockProcess
from .uniform import UniformConfig, UniformProcess
from .score_entropy import ScoreEntropyConfig, ScoreEntropyProcess
from .autoregressive import AutoregressiveConfig, AutoregressiveProcess

__all__ = ["ForwardProcess", "ProcessConfig", "MaskedConfig", "MaskedProcess", "BlockConfig", "BlockProcess",
           "UniformConfig", "UniformProcess", "ScoreEntropyConfig", "ScoreEntropyProcess",
           "AutoregressiveConfig", "AutoregressiveProcess"]
