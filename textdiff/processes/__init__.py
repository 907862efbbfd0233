"""Forward processes. Importing this package registers every built-in process."""
from .base import ForwardProcess, ProcessConfig
from .masked import MaskedConfig, MaskedProcess

__all__ = ["ForwardProcess", "ProcessConfig", "MaskedConfig", "MaskedProcess"]
