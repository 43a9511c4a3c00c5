"""What looks at the network rather than one prediction: its first layer's filters and any layer's
activation maps. Tensors in, tensors out; no Lightning, no files (`camlight.viz` draws them)."""

from camlight.inspect.filters import filter_images, first_conv, layer_output, sorted_channels

__all__ = ["filter_images", "first_conv", "layer_output", "sorted_channels"]
