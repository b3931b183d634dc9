"""lossheads: train classifiers and compare loss heads side by side."""

__version__ = "0.1.0"
