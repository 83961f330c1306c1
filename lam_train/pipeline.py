"""The whole pipeline in one call: align -> features -> similarity -> every strategy x seed -> report.

``run_pipeline(cfg)`` (``lam run CONFIG``) fills one output folder::

    OUT/
      config.yaml, versions.json      resolved configuration and library versions (write_run_info)
      steps/<step>.json               completion record of each step (fingerprint, seconds, summary)
      aligned/{source,target}/        lam align output (utterances.parquet, segments.parquet, ...)
      features/{source,target}/       feature stores (lam features)
      similarity/rankings.json        layer rankings and selections (lam similarity) + figures
      acoustics/, geometry/           with ``analyses: [acoustics, geometry]``: lam acoustics of both
                                      sides (joined), lam geometry of the two stores, with figures
      runs/<strategy>/seed<k>/        model.safetensors, metrics.json (one per strategy and seed)
      report/                         results.md/.csv/.json, coral.csv, figures/, report.md, and
                                      index.html: one self-contained page of everything above

Every step records its completion with a fingerprint of the settings it depends on; a rerun skips
the completed steps (and the finished runs inside the training step), resumes an interrupted one
from what it wrote, and refuses an output folder made with other settings instead of mixing them.

``train_only(cfg)`` (``lam train CONFIG``) runs the training and report steps on existing feature
stores (and rankings) named in the config. ``run_demo`` (``lam demo``) is ``run_pipeline`` on the
bundled bilingual demo corpus, English -> Mandarin, with the offline Whisper base model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phonalign.defaults import DEMO_CORPUS
from phonalign.fsutil import atomic_write_json, atomic_write_text, read_json
from phonalign.outdir import FolderRules, output_folder
from phonalign.provenance import to_plain, write_run_info

from .config import RunConfig, config_to_dict, load_config, parse_strategy, twin_of
from .errors import ConfigError, TrainError
from .results import (
    AcousticsStep,
    AlignedSide,
    AlignStep,
    ExtractedSide,
    FeaturesStep,
    GeometryStep,
    PipelineResult,
    ReportStep,
    SimilarityStep,
    StepSummary,
    TrainStep,
)

if TYPE_CHECKING:
    from phonalign.records import Utterance

logger = logging.getLogger(__name__)

STEPS = ("align", "features", "similarity", "acoustics", "geometry", "train", "report")
DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
#: Output folder of ``lam demo`` (and :func:`run_demo`) when none is named, relative to the working folder.
DEMO_OUTPUT = "lam_demo"

#: What a `lam run` / `lam train` output folder may hold (see :mod:`phonalign.outdir`); the
#: step records in ``steps/`` are the only files it cleans or rewrites by pattern.
PIPELINE_FOLDER = FolderRules(legacy=("steps", "runs", "report"), managed={"steps": r"^[A-Za-z0-9_.\-]+\.json$"})


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(to_plain(obj), sort_keys=True, default=str).encode()).hexdigest()[:16]


class StepRecorder:
    """Completion records in ``OUT/steps/<name>.json``; a step done with the same fingerprint is
    skipped, one done with another fingerprint is an error (the folder belongs to other settings)."""

    def __init__(self, out: Path) -> None:
        self.dir = out / "steps"

    def run(self, name: str, fingerprint_of: Any, fn: Callable[[], StepSummary]) -> StepSummary | None:
        """Run step ``name`` unless recorded as done with the same fingerprint; return its summary
        (None for a step done earlier: its summary is in its record)."""
        path = self.dir / f"{name}.json"
        fp = _fingerprint(fingerprint_of)
        if path.is_file():
            rec = read_json(path, what="step record", hint=f"delete {path.name} to run the step {name!r} again")
            if rec.get("fingerprint") != fp:
                raise ConfigError(
                    f"step {name!r} of this output folder was made with other settings",
                    path=path, hint="use a new output folder (--out), or delete the folder to start again")
            logger.info("%s: done earlier, skipped", name)
            return None
        logger.info("%s ...", name)
        t0 = time.perf_counter()
        summary = fn()
        rec = {"step": name, "fingerprint": fp, "seconds": round(time.perf_counter() - t0, 3),
               "finished": datetime.now(UTC).isoformat(timespec="seconds"), "summary": summary.to_dict()}
        atomic_write_json(path, rec)
        logger.info("%s: done in %.1f s", name, rec["seconds"])
        return summary


# ---------------------------------------------------------------------------------------------
# steps


def _read_sides(cfg: RunConfig) -> tuple[list[Utterance], list[Utterance]]:
    """Utterances of the source and target sides (one corpus split by language, or two corpora)."""
    from phonalign.corpus import locate_corpus, read_corpus

    c = cfg.corpus
    if c.path is None:
        raise ConfigError("corpus.path is not set", hint=f"name a corpus folder or manifest (or {DEMO_CORPUS!r})")
    path, implied = locate_corpus(c.path)  # lam-demo: the bundled corpus and its preset
    preset = c.preset or implied

    def language_of(p: Path, preset: str | None, lang: str | None) -> str | None:
        # a plain corpus folder does not say its language: the side's language is it
        return lang if preset is None and p.is_dir() and c.target_path else None

    def intervals_of(p: Path, preset: str | None) -> str | None:
        return c.intervals if preset is None and p.is_dir() else None

    src_all = read_corpus(path, preset=preset, language=language_of(path, preset, c.source_language),
                          intervals=intervals_of(path, preset))
    if c.target_path:
        tpath, t_implied = locate_corpus(c.target_path)
        t_preset = c.target_preset or t_implied
        tgt_all = read_corpus(tpath, preset=t_preset, language=language_of(tpath, t_preset, c.target_language),
                              intervals=intervals_of(tpath, t_preset))
    else:
        tgt_all = src_all
    src = [u for u in src_all if c.source_language is None or u.language == c.source_language]
    tgt = [u for u in tgt_all if c.target_language is None or u.language == c.target_language]
    if c.limit_per_split is not None:
        src, tgt = _limit(src, c.limit_per_split), _limit(tgt, c.limit_per_split)
    for side, utts, lang in (("source", src, c.source_language), ("target", tgt, c.target_language)):
        if not utts:
            raise ConfigError(f"the {side} side has no utterances (language {lang!r})", path=path,
                              hint="check corpus.source_language / corpus.target_language against the corpus")
    return src, tgt


def _limit(utts, k: int):
    """At most ``k`` utterances per (split, emotion), in corpus order: small balanced subsets."""
    seen: dict = {}
    out = []
    for u in utts:
        key = (u.split, u.emotion)
        if seen.get(key, 0) < k:
            seen[key] = seen.get(key, 0) + 1
            out.append(u)
    return out


def aligner_for(cfg: RunConfig, side: str):
    """The aligner backend of ``side`` (``"source"``/``"target"``), built from the config."""
    from phonalign.align import get_aligner
    from phonalign.corpus import locate_corpus

    c = cfg.corpus
    name, options = c.aligner_for(side)
    path = c.target_path if side == "target" and c.target_path else c.path
    if name == "textgrid" and options.get("textgrids") is None and path is not None:
        folder, preset = locate_corpus(path)
        if preset == DEMO_CORPUS:
            options["textgrids"] = str(folder / "textgrids")  # the demo corpus' ground-truth alignments
    return get_aligner(name, **options)


def step_align(cfg: RunConfig, out: Path, *, progress: bool) -> AlignStep:
    """Align both sides into ``OUT/aligned/{source,target}`` (``lam align``); counts per side."""
    from phonalign.align.report import UtteranceOutcome
    from phonalign.align.run import align_corpus

    src, tgt = _read_sides(cfg)
    summary: dict[str, AlignedSide] = {}
    for side, utts in (("source", src), ("target", tgt)):
        report = align_corpus(utts, out / "aligned" / side, aligner_for(cfg, side), progress=progress,
                              drop_suspect=cfg.corpus.drop_suspect, engine=cfg.engine)
        counts = report.counts
        if not counts.ok:
            # nothing to extract or train on: stop here, with the first reason, rather than fail
            # two steps later on an empty feature store
            first = next((u for u in report.utterances if not u.ok), UtteranceOutcome(None, "failed"))
            raise TrainError(
                f"no utterance of the {side} corpus could be aligned ({counts.failed} failed; "
                f"first: {first.utt_id}: {first.reason})",
                path=out / "aligned" / side / "report.json",
                hint=first.hint or "see the report; for the textgrid aligner set corpus.textgrids "
                "to the folder of the TextGrids",
            )
        summary[side] = AlignedSide(utterances=len(utts), ok=counts.ok, failed=counts.failed, suspect=counts.suspect)
    return AlignStep(source=summary["source"], target=summary["target"])


def step_features(cfg: RunConfig, out: Path, *, progress: bool) -> FeaturesStep:
    """Extract every layer of both sides into ``OUT/features/{source,target}`` (``lam features``)."""
    from analysis.extract import extract_features

    f = cfg.features
    summary: dict[str, ExtractedSide] = {}
    for side in ("source", "target"):
        rep = extract_features(out / "aligned" / side, out / "features" / side, model=f.model, device=f.device,
                               dtype=f.dtype, batch_seconds=f.batch_seconds, whisper_mode=f.whisper_mode,
                               progress=progress, store_dtype=f.store_dtype, layers=f.layers, engine=cfg.engine)
        summary[side] = ExtractedSide(ok=rep.ok, failed=rep.n_failed, rows_written=rep.rows_written,
                                      seconds=rep.seconds, forward_seconds=rep.forward_seconds)
    return FeaturesStep(source=summary["source"], target=summary["target"])


def step_similarity(cfg: RunConfig, out: Path, *, progress: bool) -> SimilarityStep:
    """Layer x unit similarity of the two stores -> ``similarity/rankings.json`` (+ figures).

    Never per emotion: that would read target labels to choose layers.
    """
    from analysis.rankings import load_selections
    from analysis.similarity import run_similarity

    s = cfg.similarity
    sim_dir = out / "similarity"
    run_similarity(out / "features" / "source", out / "features" / "target", sim_dir, metrics=(s.metric,), k=s.k,
                   n_bootstrap=s.n_bootstrap, seed=s.seed, by_emotion=False, resample=s.resample,
                   n_permutations=s.n_permutations, vowel_map=s.vowel_map, progress=progress)
    from analysis.plots import plot_dir

    figures = plot_dir(sim_dir)
    return SimilarityStep(rankings=str(sim_dir / "rankings.json"), figures=tuple(str(f) for f in figures),
                          selections=load_selections(sim_dir / "rankings.json", unit=cfg.unit))


def flat_profile_warning(rankings: str | None, cfg: RunConfig) -> str | None:
    """The loud warning owed when layers chosen from a flat profile are anchored (None otherwise).

    Only the ranked selections (BL, GL, WL) depend on the profile; ``final``, ``all`` and the random
    groups do not.
    """
    ranked = [s for s in cfg.strategies if parse_strategy(s).selection in ("BL", "GL", "WL")]
    if not rankings or not ranked:
        return None
    from analysis.rankings import load_selection_info

    text = load_selection_info(rankings, unit=cfg.unit).warning()
    return f"{text} (strategies {', '.join(ranked)}; rankings {rankings})" if text else None


def step_acoustics(cfg: RunConfig, out: Path, *, progress: bool) -> AcousticsStep:
    """``lam acoustics`` of both sides (default settings) into one table, ``OUT/acoustics``."""
    from analysis.acoustics import measure_corpus

    res = measure_corpus([out / "aligned" / "source", out / "aligned" / "target"], out / "acoustics",
                         progress=progress)
    return AcousticsStep(segments=res.n_segments, ok=res.counts.get("ok", 0), seconds=round(res.seconds, 1),
                         table=str(res.table))


def step_geometry(cfg: RunConfig, out: Path) -> GeometryStep:
    """``lam geometry`` of the two feature stores into ``OUT/geometry``."""
    from analysis.geometry import run_geometry

    res = run_geometry(out / "features" / "source", out / "features" / "target", out / "geometry",
                       seed=cfg.similarity.seed)
    return GeometryStep(layers=tuple(res.projection.layers), seconds=round(res.seconds, 1))


def expand_strategies(cfg: RunConfig) -> list[str]:
    """The strategies to train: the config's, plus each anchored one's lambda = 0 twin when
    ``coral_ablation`` is on (so the report can show what anchoring does)."""
    names = list(cfg.strategies)
    if cfg.coral_ablation:
        for s in cfg.strategies:
            twin = twin_of(s)
            if twin is not None and twin not in names:
                names.append(twin)
    return names


def step_train(cfg: RunConfig, out: Path, *, source_store: str | None, target_store: str | None,
               rankings: str | None) -> TrainStep:
    """Train every strategy (and its lambda = 0 twin) for every seed into ``OUT/runs``."""
    from .data import check_rankings_model, check_same_model, open_features
    from .train import CachedFeatures, run_training

    selections = None
    needs = any(parse_strategy(s).selection not in ("final", "all") for s in cfg.strategies)
    if rankings:
        from analysis.rankings import load_selections

        selections = load_selections(rankings, unit=cfg.unit).to_dict()  # run_training takes a dict
        warning = flat_profile_warning(rankings, cfg)
        if warning:
            logger.warning(warning)
    elif needs:
        raise ConfigError("strategies BL/GL/WL/RL* need a rankings file",
                          hint="set `rankings:` (from `lam similarity`) or use only final / all strategies")
    source = target = None
    if cfg.data.input == "pooled":
        if source_store is None:
            raise ConfigError("data.source_store is not set", hint="name the feature store written by `lam features`")
        source = CachedFeatures(open_features(source_store))
        target = source if target_store in (None, source_store) else CachedFeatures(open_features(target_store))
        check_same_model(source, target)  # before any epoch, not halfway through the first
        if rankings:
            check_rankings_model(rankings, source)
    names = expand_strategies(cfg)
    total = len(names) * len(cfg.seeds)
    done = 0
    t0 = time.perf_counter()
    for name in names:
        for seed in cfg.seeds:
            run_dir = out / "runs" / name / f"seed{seed}"
            m = run_training(cfg, strategy=name, seed=seed, out_dir=run_dir, source=source, target=target,
                             selections=selections)
            done += 1
            uar = m.target_test.uar if m.target_test is not None else float("nan")
            logger.info("  %d/%d %s seed %d: layers %s, target UAR %.3f (%.0f s)", done, total, name, seed,
                        list(m.layers), uar, time.perf_counter() - t0)
    return TrainStep(runs=total, strategies=tuple(names), seeds=tuple(cfg.seeds))


def step_report(cfg: RunConfig, out: Path, *, rankings: str | None, timings: Mapping[str, float]) -> ReportStep:
    """Tables, figures and ``report.md`` in ``OUT/report``; returns their paths."""
    from .report import markdown, write_report

    rep_dir = out / "report"
    names = expand_strategies(cfg)
    title = f"{cfg.name}: results"
    results = write_report(out / "runs", rep_dir, order=names, title=title)
    # results.md as written, from the returned tables rather than read back from the file
    lines = [markdown(results["strategies"], results["coral_ablation"], title=title)]
    warning = flat_profile_warning(rankings, cfg)
    if warning:
        lines += ["", f"**WARNING:** {warning}"]
    lines += ["", "## Where things are", ""]
    if rankings:
        from analysis.rankings import read_rankings

        doc = read_rankings(rankings)
        unit = doc.units.get(cfg.unit, {})
        lines += [f"- Layer rankings (`{cfg.unit}`, metric {doc.metric}): `{rankings}`; "
                  f"selections: {json.dumps(unit.get('selections', {}))}"]
    lines += [f"- Figures: `{rep_dir / 'figures'}` (uar.png, confusion.png)",
              f"- Runs (model.safetensors, metrics.json): `{out / 'runs'}`",
              f"- Configuration: `{out / 'config.yaml'}`", "",
              "Step times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())]
    atomic_write_text(rep_dir / "report.md", "\n".join(lines) + "\n")
    write_run_info(rep_dir, step="report", config=cfg)
    from .html_report import write_html_report

    page = write_html_report(out, title=f"{cfg.name}: lam report")
    return ReportStep(markdown=str(rep_dir / "report.md"), results=str(rep_dir / "results.md"), html=str(page.path))


# ---------------------------------------------------------------------------------------------
# entry points


def _step_seconds(out: Path) -> dict[str, float]:
    res: dict[str, float] = {}
    for p in sorted((out / "steps").glob("*.json"), key=lambda p: p.stat().st_mtime):
        res[p.stem.split("-")[0]] = res.get(p.stem.split("-")[0], 0.0) + json.loads(
            p.read_text(encoding="utf-8")).get("seconds", 0.0)
    return res


def run_pipeline(cfg: RunConfig, *, progress: bool = True) -> PipelineResult:
    """``lam run``: every step into ``cfg.output``; returns the report's paths (``result.report``).

    When the source corpus carries no emotion labels, the run stops after the similarity step with
    one log line and returns a result with ``stopped="no_emotion_labels"``, ``message`` and no
    report (``lam run`` exits with code 3): what was computed is complete; training had nothing to
    learn from.

    The speech model is ``cfg.features.model`` (a hub id, ``whisper-base`` or a local model
    folder; a small random model for a dry run: :func:`analysis.testing.random_model_dir`).

    Examples
    --------
    The demo pipeline with one seed (minutes on two CPU cores; ``lam demo`` does the same):

    >>> from lam_train.pipeline import demo_config, run_pipeline
    >>> cfg = demo_config(out="lam_demo", seeds=1)
    >>> result = run_pipeline(cfg, progress=False)  # doctest: +SKIP
    """
    out = Path(cfg.output)
    with output_folder(out, step="run", rules=PIPELINE_FOLDER):
        return _run_pipeline_locked(cfg, out, progress=progress)


def _run_pipeline_locked(cfg: RunConfig, out: Path, *, progress: bool) -> PipelineResult:
    write_run_info(out, step="run", config=cfg)
    if progress != cfg.train.progress:
        cfg = cfg.replace(train=dataclasses.replace(cfg.train, progress=progress))
    steps = StepRecorder(out)
    c = config_to_dict(cfg)
    fp_align = {"corpus": c["corpus"]}
    fp_feat = {**fp_align, "features": c["features"]}
    fp_sim = {**fp_feat, "similarity": c["similarity"]}
    fp_train = {**fp_sim, "rankings": c["rankings"], "unit": c["unit"], "data": c["data"], "model": c["model"],
                "train": {k: v for k, v in c["train"].items() if k != "progress"}}
    steps.run("align", fp_align, lambda: step_align(cfg, out, progress=progress))
    steps.run("features", fp_feat, lambda: step_features(cfg, out, progress=progress))
    if cfg.rankings:
        rankings = cfg.rankings
    else:
        steps.run("similarity", fp_sim, lambda: step_similarity(cfg, out, progress=progress))
        rankings = str(out / "similarity" / "rankings.json")
    if "acoustics" in cfg.analyses:
        steps.run("acoustics", fp_align, lambda: step_acoustics(cfg, out, progress=progress))
    if "geometry" in cfg.analyses:
        steps.run("geometry", {**fp_feat, "seed": c["similarity"]["seed"]}, lambda: step_geometry(cfg, out))
    unlabelled = _unlabelled_source(out)
    if unlabelled:
        # alignment, features and similarity stand on their own; training has nothing to learn from
        logger.warning("stopped before training: %s", unlabelled)
        return PipelineResult(out=str(out), rankings=rankings, report=None, stopped="no_emotion_labels",
                              message=unlabelled)
    train_cfg = cfg.replace(data=dataclasses.replace(
        cfg.data, source_store=str(out / "features" / "source"), target_store=str(out / "features" / "target"),
        source_aligned=str(out / "aligned" / "source"), target_aligned=str(out / "aligned" / "target"),
        encoder=cfg.data.encoder or cfg.features.model))
    # strategies and seeds may grow between reruns: finished runs are kept, new ones trained
    steps.run(f"train-{_fingerprint([expand_strategies(cfg), list(cfg.seeds)])}", fp_train,
              lambda: step_train(train_cfg, out, source_store=train_cfg.data.source_store,
                                 target_store=train_cfg.data.target_store, rankings=rankings))
    report = step_report(cfg, out, rankings=rankings, timings=_step_seconds(out))
    return PipelineResult(out=str(out), rankings=rankings, report=report)


def plan_pipeline(cfg: RunConfig, *, jobs: int = 1) -> list[str]:
    """What ``lam run`` would do with ``cfg``, one line per action (``lam run --dry-run``).

    Reads the corpora (to count utterances and check them) and builds each side's aligner, so a
    config that cannot run fails here with the same error; runs nothing and writes nothing. The
    ``mfa align`` commands are printed exactly as they would run.
    """
    from phonalign.errors import LamError

    out = Path(cfg.output)
    lines = [f"plan of `{cfg.name}` -> {out}"]
    done = {p.stem.split("-")[0] for p in (out / "steps").glob("*.json")} if (out / "steps").is_dir() else set()

    def step(name: str) -> str:
        return f"{name}{' (done earlier: skipped unless its settings changed)' if name in done else ''}:"

    lines.append(step("align"))
    try:
        src, tgt = _read_sides(cfg)
    except LamError as err:
        raise err
    for side, utts in (("source", src), ("target", tgt)):
        c = cfg.corpus
        path = c.target_path if side == "target" and c.target_path else c.path
        lang = c.source_language if side == "source" else c.target_language
        labelled = sum(1 for u in utts if u.emotion is not None)
        lines.append(f"  {side}: {len(utts)} utterances of {path} (language {lang}; {labelled} with an emotion "
                     f"label) -> {out / 'aligned' / side}")
        aligner = aligner_for(cfg, side)
        lines += [f"    {x}" for x in aligner.plan(out / "aligned" / side / "work", jobs=jobs)]
    f = cfg.features
    lines.append(step("features"))
    for side in ("source", "target"):
        lines.append(f"  {side}: model {f.model} (whisper_mode {f.whisper_mode}, device {f.device}, dtype {f.dtype})"
                     f" -> {out / 'features' / side}")
    if cfg.rankings:
        lines.append(f"similarity: skipped, rankings given: {cfg.rankings}")
    else:
        s = cfg.similarity
        lines.append(step("similarity"))
        lines.append(f"  metric {s.metric}, k {s.k}, {s.n_bootstrap} bootstrap resamples, seed {s.seed} "
                     f"-> {out / 'similarity' / 'rankings.json'}")
    names = expand_strategies(cfg)
    lines.append(step("train"))
    if not any(u.emotion is not None for u in src):
        lines.append("  stops here: the source corpus carries no emotion labels (nothing to train on)")
        return lines
    lines.append(f"  {len(names)} strategies x {len(cfg.seeds)} seeds = {len(names) * len(cfg.seeds)} runs "
                 f"({', '.join(names)}) -> {out / 'runs'}")
    lines.append(step("report"))
    lines.append(f"  {out / 'report' / 'report.md'}")
    return lines


def _unlabelled_source(out: Path) -> str | None:
    """Why training cannot run on the aligned source side (no emotion labels at all), or None."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = out / "aligned" / "source" / "utterances.parquet"
    if not path.is_file():
        return None
    emotion = pq.read_table(path, columns=["emotion"]).column("emotion")
    if len(emotion) and pc.all(pc.is_null(emotion)).as_py():
        return (f"the source corpus carries no emotion labels ({len(emotion)} utterances); alignment, features "
                f"and similarity are complete in {out}")
    return None


def train_only(cfg: RunConfig, *, strategies: Sequence[str] | None = None,
               seeds: Sequence[int] | None = None) -> PipelineResult:
    """``lam train``: training (+ report) on the feature stores and rankings named in ``cfg``."""
    if strategies:
        cfg = cfg.replace(strategies=tuple(strategies))
    if seeds:
        cfg = cfg.replace(seeds=tuple(seeds))
    d = cfg.data
    if d.input == "pooled" and not d.source_store:
        raise ConfigError("data.source_store is not set", hint="name the feature store written by `lam features`")
    out = Path(cfg.output)
    with output_folder(out, step="train", rules=PIPELINE_FOLDER):
        write_run_info(out, step="train", config=cfg)
        t0 = time.perf_counter()
        step_train(cfg, out, source_store=d.source_store, target_store=d.target_store or d.source_store,
                   rankings=cfg.rankings)
        report = step_report(cfg, out, rankings=cfg.rankings, timings={"train": time.perf_counter() - t0})
    return PipelineResult(out=str(out), rankings=cfg.rankings, report=report)


def demo_config(*, out: str | Path = DEMO_OUTPUT, model: str | None = None, seeds: int | None = None,
                overrides: Mapping | None = None) -> RunConfig:
    """The demo's config (``lam_train/configs/demo.yaml``) with the command's options applied."""
    from .config import merge

    over: dict = {"output": str(Path(out).resolve())}
    if model is not None:
        over["features"] = {"model": model}
    if seeds is not None:
        if seeds < 1:
            raise ConfigError("--seeds must be at least 1")
        over["seeds"] = list(range(seeds))
    return load_config(DEMO_CONFIG, overrides=merge(over, overrides or {}))


def run_demo(*, out: str | Path = DEMO_OUTPUT, model: str | None = None, seeds: int | None = None,
             progress: bool = True, overrides: Mapping | None = None) -> PipelineResult:
    """``lam demo``: the whole pipeline on the bundled demo corpus, English -> Mandarin (with its
    wall time in ``seconds``)."""
    cfg = demo_config(out=out, model=model, seeds=seeds, overrides=overrides)
    t0 = time.perf_counter()
    res = run_pipeline(cfg, progress=progress)
    return dataclasses.replace(res, seconds=time.perf_counter() - t0)
