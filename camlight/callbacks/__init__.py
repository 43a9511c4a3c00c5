"""Lightning callbacks: `ExplanationCallback` explains, scores and logs a probe set every epoch;
`FiltersCallback` draws the first layer's filters as they form."""

from camlight.callbacks.explanation import DEFAULT_METHODS, DEFAULT_METRICS, ExplanationCallback, flatten, log_key
from camlight.callbacks.filters import FiltersCallback

__all__ = ["DEFAULT_METHODS", "DEFAULT_METRICS", "ExplanationCallback", "FiltersCallback", "flatten", "log_key"]
