"""Lightning callbacks: thin glue from the ground floor (explain, metrics, viz) to the loggers."""

from camlight.callbacks.explanation import DEFAULT_METHODS, DEFAULT_METRICS, METRICS, ExplanationCallback

__all__ = ["DEFAULT_METHODS", "DEFAULT_METRICS", "METRICS", "ExplanationCallback"]
