"""Run configuration: frozen dataclasses, YAML round trip and validation with clear errors.

One :class:`RunConfig` drives both ``lam train CONFIG`` (training and report on existing feature
stores) and ``lam run CONFIG`` (the whole pipeline: align -> features -> similarity -> every
strategy x seed -> report). Relative paths in a YAML file are resolved against the file's
folder, so shipped configs never hold absolute site paths. The corpus path ``lam-demo``
(:data:`phonalign.defaults.DEMO_CORPUS`) names the bundled demo corpus.

Defaults that the library also has (the model's settings, the similarity draws, ...) are read
from :mod:`phonalign.defaults` and :mod:`analysis.defaults`, under the library's names, so that a
run config, ``lam`` and a notebook calling the library do the same thing when nothing is said
(``tests/test_defaults.py``).

Every key is checked: an unknown key is named with the list of valid ones, a wrong type or an
out-of-range value says which key and what is expected (:class:`~lam_train.errors.ConfigError`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from analysis.defaults import (
    BATCH_SECONDS,
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_METRIC,
    DEFAULT_MODEL,
    DEFAULT_RESAMPLE,
    DEFAULT_STORE_DTYPE,
    DEFAULT_WHISPER_MODE,
    DTYPES,
    METRICS,
    N_BOOTSTRAP,
    N_PERMUTATIONS,
    RESAMPLE_MODES,
    SEED,
    SELECTION_KEYS,
    STORE_DTYPES,
    TOP_K,
    UNITS,
    WHISPER_MODES,
    check_device,
)
from phonalign.defaults import DEMO_CORPUS, RETIRED_DEMO_TOKENS
from phonalign.engine import EngineConfig, EngineError
from phonalign.errors import LamError
from phonalign.fsutil import atomic_write_text
from phonalign.provenance import to_plain

from .errors import ConfigError

#: Layer selections a strategy names (see :func:`parse_strategy`): the rankings' selections and ``all``.
STRATEGY_SELECTIONS: tuple[str, ...] = SELECTION_KEYS + ("all",)
#: Keys renamed since earlier releases: old name -> new name (a config using the old one is told).
RENAMED_KEYS: dict[str, str] = {"similarity.n_boot": "similarity.n_bootstrap",
                                "similarity.permutations": "similarity.n_permutations"}
#: Optional views of the vowels that ``lam run`` can add (``analyses:`` in the config).
ANALYSES: tuple[str, ...] = ("acoustics", "geometry")


@dataclass(frozen=True)
class AlignSideConfig:
    """The aligner of one side of the corpus (``corpus.source`` / ``corpus.target``).

    ``aligner`` defaults to ``corpus.aligner``; ``options`` are the backend's options as declared in
    :data:`phonalign.align.options.DECLARED` (e.g. ``dictionary``, ``acoustic_model`` for ``mfa``),
    merged over ``corpus.aligner_options`` when the side uses the corpus-wide aligner.
    """

    aligner: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CorpusConfig:
    """Where the corpus is and how to read and align it (``lam run`` only).

    ``path`` is a corpus directory or manifest (``lam-demo`` = the bundled demo corpus); ``preset``
    a manifest preset of :func:`phonalign.corpus.read_corpus`; ``source_language`` and
    ``target_language`` split one corpus into the two sides. ``target_path``, when given, is a
    second corpus for the target side (then ``target_preset`` applies to it).

    ``aligner`` and ``aligner_options`` apply to both sides unless ``source`` / ``target`` name
    their own (:class:`AlignSideConfig`): one config can hold an English MFA model for the source
    and a Mandarin one for the target, or pocketsphinx for English and imported TextGrids for
    Mandarin. ``drop_suspect`` leaves utterances flagged as suspect alignments out of the
    segments (``lam align --drop-suspect``); ``intervals`` names the TextGrid tier of transcribed
    intervals of plain folders of long recordings (``lam align --intervals``).
    """

    path: str | None = None
    preset: str | None = None
    target_path: str | None = None
    target_preset: str | None = None
    source_language: str | None = "en"
    target_language: str | None = "zh"
    aligner: str = "textgrid"
    aligner_options: dict[str, Any] = field(default_factory=dict)
    source: AlignSideConfig = field(default_factory=AlignSideConfig)
    target: AlignSideConfig = field(default_factory=AlignSideConfig)
    textgrids: str | None = None  # folder of ground-truth TextGrids for the textgrid backend
    target_textgrids: str | None = None
    drop_suspect: bool = False
    intervals: str | None = None  # plain folders of long recordings: tier of transcribed intervals
    limit_per_split: int | None = None  # keep at most this many utterances per (side, split); tests

    def aligner_for(self, side: str) -> tuple[str, dict[str, Any]]:
        """``(aligner name, options as given)`` of ``side`` (``"source"`` or ``"target"``)."""
        s = self.source if side == "source" else self.target
        name = s.aligner or self.aligner
        options = dict(self.aligner_options) if name == self.aligner else {}
        if name == "textgrid":
            tg = self.target_textgrids if side == "target" and self.target_textgrids else self.textgrids
            if tg is not None:
                options["textgrids"] = tg
        options.update(s.options)
        return name, options


@dataclass(frozen=True)
class FeaturesConfig:
    """Feature extraction (``lam run``): the speech model and its settings."""

    model: str = DEFAULT_MODEL
    whisper_mode: str = DEFAULT_WHISPER_MODE
    device: str = DEFAULT_DEVICE
    dtype: str = DEFAULT_DTYPE
    batch_seconds: float = BATCH_SECONDS
    store_dtype: str = DEFAULT_STORE_DTYPE  # precision on disk (docs/scale.md)
    layers: tuple[int, ...] | None = None  # layers to keep; None = every layer


@dataclass(frozen=True)
class SimilarityConfig:
    """Layer similarity and selections (``lam run``): metric, top-k, the seed of RL1..RL3, the draws.

    The keys are those of :func:`analysis.similarity.run_similarity` (``metric`` is its first
    ``metrics``). ``n_bootstrap`` draws resample ``resample`` clusters (``auto``: speakers when both
    sides have at least 2, else utterances); with 0 draws the ties and the flatness of the profile
    are unknown. ``n_permutations`` runs the language-label permutation null (0: none).
    ``vowel_map`` also writes the cross-language vowel map (``lam similarity --vowel-map``) with the
    same draws.
    """

    metric: str = DEFAULT_METRIC
    k: int = TOP_K
    n_bootstrap: int = N_BOOTSTRAP
    seed: int = SEED
    resample: str = DEFAULT_RESAMPLE
    n_permutations: int = N_PERMUTATIONS
    vowel_map: bool = False


@dataclass(frozen=True)
class DataConfig:
    """Training data: feature stores (pooled mode) or aligned corpora (frame mode).

    ``source_store`` and ``target_store`` may be the same store; ``source_language`` /
    ``target_language`` then select the rows of each side. ``input='frames'`` computes frame
    sequences on the fly from audio (``source_aligned``/``target_aligned`` hold
    ``utterances.parquet``) through ``encoder``, with its top ``finetune_top`` layers trained.
    """

    source_store: str | None = None
    target_store: str | None = None
    source_language: str | None = None
    target_language: str | None = None
    input: Literal["pooled", "frames"] = "pooled"
    source_aligned: str | None = None
    target_aligned: str | None = None
    encoder: str | None = None
    finetune_top: int = 0
    max_seconds: float = 8.0
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: str = "test"
    standardize: bool = True  # z-score each layer with source-train statistics


@dataclass(frozen=True)
class ModelConfig:
    """Classifier: per-layer adapters to ``width``, softmax layer weights, 4 FC layers.

    ``head_hidden`` are the widths of the three hidden layers of the 4-layer head
    (``width -> h1 -> h2 -> h3 -> n_classes``). ``encoder_layers``/``encoder_heads`` shape the
    small transformer used before pooling in frame mode.
    """

    width: int = 128
    activation: Literal["relu", "gelu", "tanh"] = "gelu"
    dropout: float = 0.2
    head_hidden: tuple[int, int, int] = (128, 64, 32)
    encoder_layers: int = 1
    encoder_heads: int = 4
    normalize_adapted: bool = True  # parameter-free layer norm after each adapter (see model.py)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: CORAL weight, Adam, early stopping, balance, device and precision."""

    lambda_coral: float = 1.0
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 8
    balance: Literal["class_weight", "sampler", "none"] = "class_weight"
    selection: Literal["source_dev", "oracle_target_dev"] = "source_dev"
    device: str = DEFAULT_DEVICE  # auto | cpu | cuda | cuda:N (analysis.models.resolve_device)
    amp: bool = True
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    checkpoint_every: int = 1  # epochs between resume checkpoints (and after the last epoch)
    cpu_threads: int = 0  # torch threads on CPU; 0 = auto: 1 for pooled input, torch's default for frames
    progress: bool = True


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``lam train`` / ``lam run`` needs; saved next to every output.

    ``strategies`` are names of :func:`parse_strategy`; ``unit`` picks the rankings unit;
    ``coral_ablation`` also trains every anchored strategy with lambda = 0 on the same layers,
    so the report can show what anchoring does to the CORAL distance. ``engine`` says where
    alignment and extraction run (:class:`phonalign.engine.EngineConfig`: ``name: ray``,
    ``address``, ``workers``, ...); it is part of no step's fingerprint, so a run can be resumed
    with another engine.
    """

    name: str = "lam"
    output: str = "lam_out"
    rankings: str | None = None
    unit: str = "Utt"
    strategies: tuple[str, ...] = ("final", "final+coral", "BL", "GL", "WL", "RL1", "RL2", "RL3", "all")
    seeds: tuple[int, ...] = (0, 1, 2)
    coral_ablation: bool = True
    analyses: tuple[str, ...] = ()
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with top-level fields changed, re-validated."""
        return validate(dataclasses.replace(self, **changes))


# ---------------------------------------------------------------------------------------------
# strategies


@dataclass(frozen=True)
class Strategy:
    """A parsed strategy name: which layer selection, and whether CORAL anchors it."""

    name: str
    selection: str
    coral: bool


def parse_strategy(name: str) -> Strategy:
    """``final`` | ``final+coral`` | ``BL`` | ``GL`` | ``WL`` | ``RL1..RL3`` | ``all`` [``+coral``].

    ``final`` and ``all`` are baselines without CORAL unless ``+coral`` is added; the selections
    of the rankings (BL, GL, WL, RL*) are anchored by definition (that is the method); a
    ``-nocoral`` suffix trains them with lambda = 0 (the ablation twin).
    """
    m = re.fullmatch(r"([A-Za-z0-9]+)(\+coral|-nocoral)?", name or "")
    if not m or m.group(1) not in STRATEGY_SELECTIONS:
        raise ConfigError(
            f"unknown strategy {name!r}",
            hint=f"use one of {', '.join(STRATEGY_SELECTIONS)}, optionally with '+coral' (or '-nocoral')",
        )
    sel, suffix = m.group(1), m.group(2)
    if suffix == "+coral":
        coral = True
    elif suffix == "-nocoral":
        coral = False
    else:
        coral = sel not in ("final", "all")
    return Strategy(name=name, selection=sel, coral=coral)


def twin_of(strategy: str) -> str | None:
    """The lambda = 0 run on the same layers as an anchored strategy (None if not anchored).

    ``final+coral`` -> ``final``, ``all+coral`` -> ``all``, ``BL`` -> ``BL-nocoral``.
    """
    s = parse_strategy(strategy)
    if not s.coral:
        return None
    return s.selection if s.selection in ("final", "all") else f"{s.selection}-nocoral"


# ---------------------------------------------------------------------------------------------
# mapping <-> dataclass with validation


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as err:
                errors.append(err.message)
        raise ConfigError(f"{where}: {errors[0] if errors else 'invalid value'}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of settings, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} items, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if dataclasses.is_dataclass(value):
            value = to_plain(value)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of settings, got {value!r}")
        return _from_mapping(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads "1e-3" as a string; accept numeric strings for floats only.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, Path):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported setting type {_type_name(tp)}")  # programming error


def _from_mapping(cls: type, mapping: Mapping, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in mapping if k not in names]
    renamed = {k: RENAMED_KEYS[f"{where}.{k}" if where else k] for k in unknown
               if (f"{where}.{k}" if where else k) in RENAMED_KEYS}
    if renamed:
        old, new = next(iter(renamed.items()))
        raise ConfigError(f"{where + '.' if where else ''}{old}: this key is now called {new!r}",
                          hint=f"rename it to {new.rpartition('.')[2]!r}")
    if unknown:
        raise ConfigError(
            f"{where or 'config'}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}",
            hint=f"valid keys{' of ' + where if where else ''}: {', '.join(names)}",
        )
    kwargs = {k: _convert(v, hints[k], f"{where + '.' if where else ''}{k}") for k, v in mapping.items()}
    return cls(**kwargs)


def _check(cond: bool, message: str, hint: str | None = None) -> None:
    if not cond:
        raise ConfigError(message, hint=hint)


def validate(cfg: RunConfig) -> RunConfig:
    """Check value ranges and cross-field rules; return ``cfg`` unchanged or raise ConfigError."""
    t, m, d = cfg.train, cfg.model, cfg.data
    _check(cfg.unit in UNITS, f"unit: {cfg.unit!r} is not one of {', '.join(UNITS)}")
    _check(len(cfg.strategies) > 0, "strategies: give at least one strategy")
    for s in cfg.strategies:
        parse_strategy(s)
    _check(len(set(cfg.strategies)) == len(cfg.strategies), "strategies: a strategy is listed twice")
    _check(len(cfg.seeds) > 0, "seeds: give at least one seed")
    _check(len(set(cfg.seeds)) == len(cfg.seeds), "seeds: a seed is listed twice")
    _check(t.lambda_coral >= 0, f"train.lambda_coral must be >= 0, got {t.lambda_coral}")
    _check(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    _check(t.batch_size >= 2, f"train.batch_size must be >= 2 (CORAL needs two rows), got {t.batch_size}")
    _check(t.lr > 0, f"train.lr must be > 0, got {t.lr}")
    _check(t.patience >= 1, f"train.patience must be >= 1, got {t.patience}")
    _check(t.cpu_threads >= 0, f"train.cpu_threads must be >= 0, got {t.cpu_threads}")
    _check(t.checkpoint_every >= 1, f"train.checkpoint_every must be >= 1, got {t.checkpoint_every}")
    _check(m.width >= 1 and all(h >= 1 for h in m.head_hidden), "model: widths must be >= 1")
    _check(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}")
    _check(m.encoder_layers >= 0, "model.encoder_layers must be >= 0")
    _check(m.width % max(m.encoder_heads, 1) == 0 and m.encoder_heads >= 1,
           f"model.width ({m.width}) must be a multiple of model.encoder_heads ({m.encoder_heads})")
    _check(d.finetune_top >= 0, "data.finetune_top must be >= 0")
    _check(d.max_seconds > 0, "data.max_seconds must be > 0")
    _check(d.finetune_top == 0 or d.input == "frames",
           "data.finetune_top > 0 needs data.input: frames", hint="fine-tuning runs on audio, not pooled features")
    _check(cfg.similarity.k >= 1, "similarity.k must be >= 1")
    # numpy seeds and counts must be non-negative; a wrong value must fail here, not after hours
    _check(all(s >= 0 for s in cfg.seeds), f"seeds must be >= 0, got {list(cfg.seeds)}")
    _check(cfg.similarity.n_bootstrap >= 0, f"similarity.n_bootstrap must be >= 0, got {cfg.similarity.n_bootstrap}")
    _check(cfg.similarity.n_permutations >= 0,
           f"similarity.n_permutations must be >= 0, got {cfg.similarity.n_permutations}")
    _check(cfg.similarity.resample in RESAMPLE_MODES,
           f"similarity.resample: {cfg.similarity.resample!r} is not one of {', '.join(RESAMPLE_MODES)}")
    _check(cfg.similarity.seed >= 0, f"similarity.seed must be >= 0, got {cfg.similarity.seed}")
    _check(cfg.features.batch_seconds > 0, f"features.batch_seconds must be > 0, got {cfg.features.batch_seconds}")
    _check(cfg.features.dtype in DTYPES,
           f"features.dtype: {cfg.features.dtype!r} is not one of {', '.join(DTYPES)}")
    _check(cfg.features.whisper_mode in WHISPER_MODES,
           f"features.whisper_mode: {cfg.features.whisper_mode!r} is not one of {', '.join(WHISPER_MODES)}")
    _check(cfg.features.store_dtype in STORE_DTYPES,
           f"features.store_dtype: {cfg.features.store_dtype!r} is not one of {', '.join(STORE_DTYPES)}")
    for key, device in (("features.device", cfg.features.device), ("train.device", t.device)):
        try:
            check_device(device)
        except LamError as err:
            raise ConfigError(f"{key}: {err.message}", hint=err.hint) from None
    for key in ("path", "target_path"):
        value = getattr(cfg.corpus, key)
        _check(value not in RETIRED_DEMO_TOKENS, f"corpus.{key}: {value!r} no longer names the demo corpus",
               hint=f"write {DEMO_CORPUS!r}")

    _check(cfg.similarity.metric in METRICS,
           f"similarity.metric: {cfg.similarity.metric!r} is not one of {', '.join(METRICS)}")
    for a in cfg.analyses:
        _check(a in ANALYSES, f"analyses: {a!r} is not one of {', '.join(ANALYSES)}")
    for side in ("source", "target"):
        check_aligner_side(cfg.corpus, side)
    try:
        cfg.engine.check()
    except EngineError as err:
        raise ConfigError(f"engine: {err.message}", hint=err.hint) from None
    return cfg


def check_aligner_side(corpus: CorpusConfig, side: str, *, base_dir: Path | None = None) -> dict[str, Any]:
    """Check the aligner and options of one side against the backend's declaration; return the
    options converted (relative paths resolved against ``base_dir`` when given).

    Raises
    ------
    ConfigError
        Naming the key (``corpus.target.aligner``, ``corpus.source.options.beam``) and the fix.
    """
    from phonalign.align.options import DECLARED, convert_options, missing_required
    from phonalign.errors import AlignerError

    s = corpus.source if side == "source" else corpus.target
    key = f"corpus.{side}.aligner" if s.aligner else "corpus.aligner"
    name, options = corpus.aligner_for(side)
    if name not in DECLARED:
        raise ConfigError(f"{key}: {name!r} is not one of {', '.join(DECLARED)}",
                          hint="textgrid imports existing TextGrids; mfa and pocketsphinx align audio")
    where = f"corpus.{side}.options" if s.options else "corpus.aligner_options"
    try:
        converted = convert_options(name, options, where=where, base_dir=base_dir)
    except AlignerError as err:
        raise ConfigError(err.message, hint=err.hint) from None
    missing = missing_required(name, converted)
    if missing:
        raise ConfigError(f"corpus.{side}: the {name!r} aligner needs {', '.join(o.name for o in missing)}",
                          hint=f"set corpus.{side}.options: "
                          + ", ".join(f"{o.name} ({o.help})" for o in missing))
    return converted


def config_from_dict(mapping: Mapping, *, base_dir: str | Path | None = None) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a plain mapping (e.g. parsed YAML).

    Relative paths are resolved against ``base_dir`` when it is given.
    """
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"a config must be a mapping of settings, got {type(mapping).__name__}")
    if isinstance(mapping.get("engine"), str):  # `engine: ray` is short for `engine: {name: ray}`
        mapping = {**mapping, "engine": {"name": mapping["engine"]}}
    cfg = validate(_from_mapping(RunConfig, mapping, ""))
    return resolve_paths(cfg, base_dir) if base_dir is not None else cfg


def _resolve(p: str | None, base: Path) -> str | None:
    if p is None or p == DEMO_CORPUS:
        return p
    path = Path(p).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def resolve_paths(cfg: RunConfig, base_dir: str | Path) -> RunConfig:
    """Return ``cfg`` with every relative path made absolute against ``base_dir``."""
    base = Path(base_dir)
    r = lambda p: _resolve(p, base)  # noqa: E731
    c, d = cfg.corpus, cfg.data
    sides = {}
    for side in ("source", "target"):
        # options resolved for the side (paths against the config's folder), written back as the
        # side's own options so that the saved config says exactly what ran
        name, _ = c.aligner_for(side)
        sides[side] = AlignSideConfig(aligner=name, options=check_aligner_side(c, side, base_dir=base))
    c = dataclasses.replace(c, source=sides["source"], target=sides["target"])
    return dataclasses.replace(
        cfg,
        output=r(cfg.output) or cfg.output,
        rankings=r(cfg.rankings),
        corpus=dataclasses.replace(c, path=r(c.path), target_path=r(c.target_path), textgrids=r(c.textgrids),
                                   target_textgrids=r(c.target_textgrids)),
        data=dataclasses.replace(d, source_store=r(d.source_store), target_store=r(d.target_store),
                                 source_aligned=r(d.source_aligned), target_aligned=r(d.target_aligned)),
    )


def load_config(path: str | Path, *, overrides: Mapping | None = None) -> RunConfig:
    """Read a YAML run config; relative paths are taken from the file's folder.

    ``overrides`` is a nested mapping merged over the file (e.g. ``{"train": {"epochs": 2}}``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path=path, hint="give the path of a YAML run config")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        raise ConfigError(f"not valid YAML: {err}", path=path, line=None if line is None else line + 1) from err
    if overrides:
        raw = merge(raw, overrides)
    try:
        return config_from_dict(raw, base_dir=path.parent)
    except ConfigError as err:
        line = _line_of(err.message, _key_lines(path.read_text(encoding="utf-8")))
        raise ConfigError(err.message, path=path, line=line, hint=err.hint) from err


def _key_lines(text: str) -> dict[str, int]:
    """Dotted key path (``corpus.source.options.beam``, ``seeds[1]``) -> 1-based line in the YAML."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    out: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                out[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                out[f"{prefix}[{i}]"] = v.start_mark.line + 1
                walk(v, f"{prefix}[{i}]")

    if root is not None:
        walk(root, "")
    return out


_UNKNOWN_KEY = re.compile(r"^(?P<where>[\w.\[\]]*?):? ?unknown keys? '(?P<key>[^']+)'")
_LEADING_KEY = re.compile(r"^(?P<key>[A-Za-z_][\w.\[\]]*)")


def _line_of(message: str, lines: dict[str, int]) -> int | None:
    """The line of the key a ConfigError message starts with (or of its nearest parent key)."""
    m = _UNKNOWN_KEY.match(message)
    if m:
        where = "" if m.group("where") == "config" else m.group("where")
        key = f"{where}.{m.group('key')}" if where else m.group("key")
    else:
        m2 = _LEADING_KEY.match(message)
        if not m2:
            return None
        key = m2.group("key")
    while key:
        if key in lines:
            return lines[key]
        key = re.sub(r"(\.[^.\[\]]*|\[\d+\])$", "", key) if re.search(r"[.\[]", key) else ""
    return None


def merge(base: Mapping, over: Mapping) -> dict:
    """Recursive dict merge: values of ``over`` win; nested mappings are merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def config_to_dict(cfg: RunConfig) -> dict:
    """Plain builtins (lists, dicts, str) for YAML/JSON."""
    return to_plain(cfg)


def dump_config(cfg: RunConfig) -> str:
    """YAML text that :func:`config_from_dict` reads back to an equal config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML, atomically."""
    atomic_write_text(path, dump_config(cfg))
