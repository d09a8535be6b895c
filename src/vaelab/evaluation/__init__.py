"""Evaluation: ELBO, IS log-likelihood, diagnostics, gradient statistics, amortization gaps."""
