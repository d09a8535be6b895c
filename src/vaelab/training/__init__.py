"""Training: the model-agnostic trainer, the process group, run folders and checkpoints,
speed settings."""
