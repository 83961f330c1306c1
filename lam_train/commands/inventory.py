"""`lam inventory OUT`: the phones and unit classes an aligned corpus holds, per language."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``lam inventory`` to the ``lam`` app."""
    @app.command("inventory")
    def inventory(
        out: Path = typer.Argument(..., help="Output folder of `lam align` (holds segments.parquet)."),
        as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON instead of tables."),
        top: int = typer.Option(40, "--top", min=1, help="Phones shown per language (most frequent first)."),
    ) -> None:
        """Count segments per unit class and per phone for each language, and list unknown labels.

        Unknown labels are phones no table recognised: they are never counted as consonants; fix
        the labels or name the phone set with `lam align --phone-set`.
        """
        from rich.console import Console
        from rich.table import Table

        from phonalign.inventory import corpus_inventory

        inv = corpus_inventory(out)
        if as_json:
            typer.echo(json.dumps(inv, ensure_ascii=False, indent=2))
            return
        console = Console()
        for language, info in inv.items():
            console.print(f"[bold]{language}[/bold]: {info['utterances']} utterances, "
                          f"{info['segments']} segments, phone set(s): {', '.join(info['phone_sets']) or '-'}")
            classes = Table(title=f"{language}: unit classes")
            classes.add_column("class")
            classes.add_column("segments", justify="right")
            for cls, n in info["classes"].items():
                classes.add_row(cls, str(n))
            console.print(classes)
            phones = Table(title=f"{language}: phones (top {top} of {len(info['phones'])})")
            phones.add_column("phone")
            phones.add_column("class")
            phones.add_column("count", justify="right")
            for row in info["phones"][:top]:
                phones.add_row(row["phone"] or "''", row["unit_class"], str(row["count"]))
            console.print(phones)
            if info.get("excluded"):
                shown = ", ".join(f"{ph!r} x{n}" for ph, n in info["excluded"].items())
                console.print(f"left out by a class option (see options in {out / 'config.yaml'}): "
                              f"{sum(info['excluded'].values())} vowel segments: {shown}")
            if info["unknown"]:
                shown = ", ".join(f"{lab!r} x{n}" for lab, n in info["unknown"].items())
                console.print(f"[yellow]unknown labels ({sum(info['unknown'].values())} segments):[/yellow] {shown}")
            else:
                console.print("no unknown labels")
