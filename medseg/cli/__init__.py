"""Command-line interface: one module per sub-command, each exposing ``register``."""
