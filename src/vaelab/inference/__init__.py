"""Inference: gradient estimators, baselines, objectives, the fused ELBO,
per-datapoint refinement and training modes."""
