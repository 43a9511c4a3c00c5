"""Overlays, the probe grid, localization plots, HTML reports and the files they are written to."""

from camlight.viz.files import atomic_file, save_png, whole_folder, write_csv
from camlight.viz.grid import probe_grid, tile_grid
from camlight.viz.overlay import colorize, contour, denormalize, draw_contour, overlay
from camlight.viz.plots import agreement_plot, embedding_plot, localization_plot, randomization_plot

__all__ = [
    "agreement_plot",
    "atomic_file",
    "colorize",
    "contour",
    "denormalize",
    "embedding_plot",
    "draw_contour",
    "localization_plot",
    "overlay",
    "probe_grid",
    "randomization_plot",
    "save_png",
    "tile_grid",
    "whole_folder",
    "write_csv",
]
