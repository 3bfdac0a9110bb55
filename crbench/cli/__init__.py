"""Command-line interface. Each subcommand lives in its own module with ``register(sub)``."""
