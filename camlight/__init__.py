"""camlight: train CNN classifiers with Lightning and watch, epoch by epoch, where they look."""

__version__ = "0.1.0"
