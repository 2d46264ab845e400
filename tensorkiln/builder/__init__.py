"""Builder, BuilderConfig and optimization profiles."""

from .builder import Builder
from .config import BuilderConfig, OptimizationProfile

__all__ = ["Builder", "BuilderConfig", "OptimizationProfile"]
