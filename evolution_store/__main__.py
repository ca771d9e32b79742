"""`python -m evolution_store` is the `evolution-store` command."""

from .cli import cli

if __name__ == "__main__":
    cli(prog_name="evolution-store")
