"""tsm: a training pipeline for Chronos-2 time-series foundation models."""

__version__ = "0.1.0"
