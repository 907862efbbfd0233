"""Samplers. Importing this package registers every built-in sampler."""
from .ancestral import AncestralConfig, AncestralSampler
from .base import Sampler, SamplerConfig, StepOutput

__all__ = ["Sampler", "SamplerConfig", "StepOutput", "AncestralConfig", "AncestralSampler"]
