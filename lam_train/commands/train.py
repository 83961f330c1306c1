"""`lam train CONFIG`: train (and report) on existing feature stores, one run or a grid."""

from __future__ import annotations

from pathlib import Path

import typer

from . import _options as opt


def _strategies(values: list[str] | None) -> list[str] | None:
    from lam_train.config import parse_strategy
    from lam_train.errors import ConfigError

    for v in values or []:
        try:
            parse_strategy(v)
        except ConfigError as err:
            raise typer.BadParameter(f"{err.message}; {err.hint}") from None
    return values


def register(app: typer.Typer) -> None:
    """Add `lam train` to the ``lam`` app."""
    @app.command("train")
    def train(
        config: Path = typer.Argument(..., help="YAML run config (see lam_train/configs/ and docs/training.md)."),
        strategies: list[str] | None = typer.Option(
            None, "--strategy", "-s", callback=_strategies,
            help="Train only this strategy (repeatable): final, final+coral, BL, GL, WL, RL1..RL3, all "
                 "[+coral|-nocoral]. Default: the config's strategies."),
        seeds: list[int] | None = typer.Option(None, "--seed", min=0,
                                                 help="Only this seed (repeatable, >= 0). Default: the config's."),
        out: Path | None = typer.Option(None, "--out", help="Output folder (default: the config's `output`)."),
        epochs: int | None = typer.Option(None, "--epochs", min=1, help="Override train.epochs."),
        device: str | None = typer.Option(None, "--device", callback=opt.device,
                                          help="Override train.device: auto, cpu, cuda or cuda:N."),
    ) -> None:
        """Train the emotion classifier with CORAL layer anchoring on the config's feature stores.

        Writes OUT/runs/<strategy>/seed<k>/{model.safetensors,metrics.json} and OUT/report/.
        Finished runs are skipped and interrupted ones resume from their last checkpoint.
        """
        from lam_train.config import load_config
        from lam_train.pipeline import train_only

        over: dict = {}
        if out is not None:
            over["output"] = str(out.resolve())
        if epochs is not None or device is not None:
            over["train"] = {k: v for k, v in (("epochs", epochs), ("device", device)) if v is not None}
        cfg = load_config(config, overrides=over)
        res = train_only(cfg, strategies=strategies or None, seeds=seeds or None)
        assert res.report is not None  # train_only always reports
        typer.echo(f"Report: {res.report.markdown}")
