"""Samplers. Importing this package registers every built-in sampler."""
from .ancestral import AncestralConfig, AncestralSampler
from .base import Sampler, SamplerConfig, StepOutput
from .confidence import ConfidenceConfig, ConfidenceSampler, ThresholdConfig, ThresholdSampler
from .euler import AnalyticConfig, AnalyticSampler, EulerConfig, EulerSampler
from .first_hitting import FirstHittingConfig, FirstHittingSampler
from .remdm import ReMDMConfig, ReMDMSampler

__all__ = [
    "Sampler", "SamplerConfig", "StepOutput",
    "AncestralConfig", "AncestralSampler",
    "ConfidenceConfig", "ConfidenceSampler", "ThresholdConfig", "ThresholdSampler",
    "EulerConfig", "EulerSampler", "AnalyticConfig", "AnalyticSampler",
    "FirstHittingConfig", "FirstHittingSampler",
    "ReMDMConfig", "ReMDMSampler",
]
