"""Graph -> Graph passes and the ordered pipeline the builder runs."""

from .pipeline import DEFAULT_PIPELINE, PassReport, run_pipeline

__all__ = ["DEFAULT_PIPELINE", "PassReport", "run_pipeline"]
