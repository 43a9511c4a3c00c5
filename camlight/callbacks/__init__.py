"""Lightning callbacks: `ExplanationCallback` explains, scores and logs a probe set every epoch."""

from camlight.callbacks.explanation import DEFAULT_METHODS, DEFAULT_METRICS, ExplanationCallback, flatten, log_key

__all__ = ["DEFAULT_METHODS", "DEFAULT_METRICS", "ExplanationCallback", "flatten", "log_key"]
