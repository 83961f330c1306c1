"""`lam inventory`: placeholder until its issue lands (owner replaces this module)."""

import typer


def register(app: typer.Typer) -> None:
    @app.command("inventory")
    def _cmd() -> None:
        """Not implemented yet."""
        raise typer.Exit(1)
