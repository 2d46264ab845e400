"""Graph -> Graph passes and the ordered pipeline the builder runs."""

from .context import PassContext, PassReport
from .pipeline import DEFAULT_PIPELINE, REQUIRED_PIPELINE, default_pipeline, run_pipeline

__all__ = ["DEFAULT_PIPELINE", "PassContext", "PassReport", "REQUIRED_PIPELINE", "default_pipeline", "run_pipeline"]
