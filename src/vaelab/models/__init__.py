"""Models: networks, latent families, priors, likelihoods and the VAE; distributions in, no loss."""
