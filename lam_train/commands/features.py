"""`lam features ALIGNED OUT --model ID`: every layer pooled per utterance and segment -> feature store."""

from __future__ import annotations

from pathlib import Path

import typer

from analysis.defaults import (
    BATCH_SECONDS,
    CHUNK_ROWS,
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_STORE_DTYPE,
    DEFAULT_WHISPER_MODE,
    DTYPES,
    STORE_DTYPES,
    WHISPER_MODES,
)

from . import _options as opt


def _check_layers(text: str | None) -> str | None:
    """``--layers``: a list of layers and ranges (checked against the model once it is loaded)."""
    if text is None:
        return text
    from analysis.errors import StoreError
    from analysis.store import parse_layers

    try:
        parse_layers(text, 10**6)
    except StoreError as err:
        raise typer.BadParameter(f"{err.message} ({err.hint})") from None
    return text


def register(app: typer.Typer) -> None:
    """Add ``lam features`` to the ``lam`` app."""
    @app.command("features")
    def features(
        aligned: Path = typer.Argument(..., help="Output directory of `lam align` (utterances.parquet + "
                                       "segments.parquet), or a plain corpus for utterance features only."),
        out: Path = typer.Argument(..., help="Feature store directory (created, or resumed)."),
        model: str = typer.Option(..., "--model", help="Hub id, local directory, CTranslate2 Whisper "
                                  "directory or `whisper-base`."),
        device: str = typer.Option(DEFAULT_DEVICE, callback=opt.device, help="auto | cpu | cuda | cuda:N"),
        dtype: str = typer.Option(DEFAULT_DTYPE, callback=opt.choice(DTYPES),
                                  help=" | ".join(DTYPES) + " (the last two on CUDA)"),
        batch_seconds: float = typer.Option(BATCH_SECONDS, callback=opt.positive,
                                            help="Cap on padded audio per batch, seconds."),
        whisper_mode: str = typer.Option(DEFAULT_WHISPER_MODE, callback=opt.choice(WHISPER_MODES),
                                         help="crop: pad to 30 s, crop the output (as trained); "
                                         "trim: encode the real length only (faster, approximate)."),
        shard: str = typer.Option("0/1", callback=opt.shard,
                                  help="I/N: this run does shard I of N (utterances by a hash of their "
                                  "id). Shards of one store may run at the same time; each keeps its report in "
                                  "OUT/shards/, and the last to finish merges them into OUT/report.json."),
        strict: bool = typer.Option(False, help="Stop at the first failing utterance."),
        chunk_rows: int = typer.Option(CHUNK_ROWS, min=1, help="Rows per committed chunk of the store."),
        language: str | None = typer.Option(None, "--language", callback=opt.choice(opt.languages),
                                               help="Only utterances of this language "
                                               "(e.g. en), to make one store per corpus side; for a plain "
                                               "corpus folder, the language of its utterances."),
        store_dtype: str = typer.Option(DEFAULT_STORE_DTYPE, "--store-dtype", callback=opt.choice(STORE_DTYPES),
                                        help="Precision of the stored vectors: float32, float16 (half the size; "
                                        "values beyond +-65504 are refused) or bfloat16 (half the size, "
                                        "float32's range). Readers always get float32."),
        layers: str | None = typer.Option(None, "--layers", callback=_check_layers,
                                          help="Layers to keep, e.g. 0,6-12 (default: all, 0..L). Similarity "
                                          "and training use the stored ones and refuse others."),
        engine: str = typer.Option("local", "--engine", callback=opt.choice(opt.engines),
                                   help="Where batches run: local (this process) or ray (actors that keep the "
                                   "model loaded, on a Ray cluster; pip install 'lam-toolkit[ray]'). Same store; "
                                   "a run can be resumed with the other engine."),
        ray_address: str | None = typer.Option(None, "--ray-address", help="ray: the cluster to join, auto or "
                                                  "HOST:PORT of its head; default: start a Ray instance on this "
                                                  "machine for the run."),
        workers: int | None = typer.Option(None, "--workers", min=1, help="ray: actors, each loading the model "
                                              "once (default: as many as the cluster's CPUs or GPUs hold)."),
        gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0,
                                              help="ray: GPUs per actor (1; 0.5 shares a GPU between two)."),
        cpus_per_worker: int = typer.Option(1, "--cpus-per-worker", min=1,
                                            help="ray: CPUs per actor, also its torch threads."),
        progress: bool = typer.Option(True, "--progress/--no-progress",
                                      help="Show a progress bar (on a terminal; otherwise a line per step)."),
        random_init: bool = typer.Option(False, "--random-init", help="Untrained control: the same architecture "
                                         "with freshly initialised weights (seed recorded; the store says "
                                         "weights: random-init)."),
        init_seed: int = typer.Option(0, "--init-seed", min=0, help="Seed of the --random-init weights."),
        force: bool = typer.Option(False, "--force", help="Accept a store made with another model or "
                                   "settings (its contents are replaced) or from another corpus (its "
                                   "utterances are dropped); default: refused."),
        allow_missing: bool = typer.Option(False, "--allow-missing", help="Accept a model folder whose weight "
                                           "files lack some of the architecture's weights (left random) or hold "
                                           "others; recorded in the store. Default: an error naming them."),
    ) -> None:
        """Pool every layer of MODEL per utterance and per phone segment into a feature store.

        Rerun the same command to resume after a crash or a change of the input: utterances done
        from unchanged inputs are kept, changed ones are redone, removed ones dropped.
        """
        from analysis.extract import extract_features
        from phonalign.engine import resolve_engine

        if not progress:  # transformers draws its own bar while loading weights
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

        if not aligned.exists():
            raise typer.BadParameter(f"{aligned} does not exist", param_hint="ALIGNED")
        engine_cfg = resolve_engine(engine, address=ray_address, workers=workers,
                                    gpus_per_worker=gpus_per_worker or None,
                                    cpus_per_worker=cpus_per_worker if engine == "ray" else None)
        report = extract_features(aligned, out, model=model, device=device, dtype=dtype,
                                  batch_seconds=batch_seconds, whisper_mode=whisper_mode,
                                  shard=shard, strict=strict, chunk_rows=chunk_rows,
                                  progress=progress, language=language, force=force, allow_missing=allow_missing,
                                  random_init=random_init, init_seed=init_seed, store_dtype=store_dtype, layers=layers,
                                  engine=engine_cfg)
        typer.echo(f"{report.ok} utterances pooled ({report.rows_written} rows), "
                   f"{report.skipped_done} already done, {report.redone} redone (changed), "
                   f"{report.dropped} dropped (no longer in the input), {report.n_failed} failed -> {out}")
        if report.n_failed:
            typer.echo(f"failures are listed in {out / 'report.json'}", err=True)
