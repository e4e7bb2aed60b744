"""Training: the loop, checkpoints and monitoring. `python -m tsm.train` runs `tsm train`."""
