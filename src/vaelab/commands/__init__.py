"""One module per ``vaelab`` subcommand; each exposes ``register(subparsers)``."""
