"""`lam demo`: placeholder until its issue lands (owner replaces this module)."""

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def _cmd() -> None:
        """Not implemented yet."""
        raise typer.Exit(1)
