"""CLI commands (placeholder until the stage lands)."""
