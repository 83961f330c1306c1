"""A CTranslate2 Whisper -> a Hugging Face Whisper directory (float32 safetensors), and back to a model.

:func:`convert_ct2_whisper` writes the directory atomically (a temporary sibling renamed into
place, so a killed process never leaves a half-written one); :func:`load_converted` loads such a
directory faster than ``from_pretrained`` (see its docstring). Caching by content is
:mod:`analysis.ct2.cache`'s job.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .builders import build_configs, build_tokenizer
from .errors import CT2FormatError, ModelLoadError
from .mapping import ct2_to_hf_state_dict
from .reader import read_ct2_model
from .source import CT2Source

if TYPE_CHECKING:
    import torch
    from transformers import WhisperForConditionalGeneration

__all__ = ["CONVERTER_VERSION", "convert_ct2_whisper", "is_complete_conversion", "load_converted"]

#: Bumped whenever the converted output would change for the same input bytes (it is in the cache key).
CONVERTER_VERSION = "lam-ct2-whisper-2"

_CACHE_FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "preprocessor_config.json", "conversion.json")


def is_complete_conversion(directory: Path) -> bool:
    """Whether ``directory`` holds every file :func:`convert_ct2_whisper` writes (a finished conversion)."""
    return all((directory / f).is_file() for f in _CACHE_FILES)


def convert_ct2_whisper(source: CT2Source | str | Path, out_dir: str | Path, *,
                        digests: dict[str, str] | None = None) -> Path:
    """Convert a CTranslate2 Whisper model into a Hugging Face directory (float32 safetensors).

    The output is byte-for-byte deterministic for the same input bytes. ``out_dir`` is written
    atomically: files go to a temporary sibling directory that is renamed into place at the end;
    an existing complete ``out_dir`` is left untouched.

    Parameters
    ----------
    source : CT2Source or path
        A source, or a directory holding ``model.bin`` (or its parts) and companions.
    out_dir : path
    digests : dict, optional
        Source file hashes to record in ``conversion.json`` (see :func:`source_key`).

    Returns
    -------
    Path
        ``out_dir``.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    if not isinstance(source, CT2Source):
        source = CT2Source.from_directory(source)
    out_dir = Path(out_dir)
    ct2_config: dict[str, Any] = {}
    if source.config is not None:
        try:
            ct2_config = json.loads(source.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read the CTranslate2 config: {exc}", path=source.config,
                                 hint="restore config.json from the original faster-whisper model") from exc
    with read_ct2_model(source.model_files) as ckpt:
        arrays, dims = ct2_to_hf_state_dict(ckpt)
        meta = {"binary_version": ckpt.binary_version, "spec": ckpt.spec_name, "revision": ckpt.revision,
                "dtypes": sorted(set(ckpt.dtypes.values()))}
    tokenizer = build_tokenizer(source, dims.vocab_size)
    config, gen = build_configs(dims, ct2_config, tokenizer)

    # Check against the parameters transformers itself declares (meta device: no memory, no init).
    with torch.device("meta"):
        skeleton = WhisperForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if dims.tie_word_embeddings:
        expected.pop("proj_out.weight", None)
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    wrong = sorted(k for k in set(expected) & set(arrays) if tuple(arrays[k].shape) != expected[k])
    if missing or extra or wrong:
        raise CT2FormatError(f"conversion does not fill WhisperForConditionalGeneration exactly: "
                             f"missing {missing[:5]}, unexpected {extra[:5]}, wrong shapes {wrong[:5]}",
                             path=source.model_files[0],
                             hint="report this with the model's origin; the converter needs a rule for it")
    tensors = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in sorted(arrays)}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(tmp)
        gen.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=dims.num_mel_bins).save_pretrained(tmp)
        info = {"converter": CONVERTER_VERSION, "source_files": [p.name for p in source.all_files()],
                "source_sha256": digests or {}, "ct2": meta, "dims": dims.__dict__}
        (tmp / "conversion.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        # mkdtemp makes a private directory; a cache is shared like any other file the user writes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
        if out_dir.exists():
            if is_complete_conversion(out_dir):
                return out_dir  # another process won the race; its output is identical
            shutil.rmtree(out_dir)  # a leftover without its completion marker
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not is_complete_conversion(out_dir):  # not a lost race with an identical conversion
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def load_converted(directory: str | Path, *, dtype: torch.dtype | None = None) -> WhisperForConditionalGeneration:
    """Load a directory written by :func:`convert_ct2_whisper` (a Hugging Face Whisper directory).

    The result equals ``WhisperForConditionalGeneration.from_pretrained(directory)`` (a test
    checks every tensor and the generation config) but skips what that general loader needs for
    arbitrary checkpoints and we do not: on its first call in a process, transformers 5 compiles
    about a thousand regular expressions for checkpoint key renaming (~1 s). Our files were written
    with exactly the model's own keys, so the model is built on the meta device and the
    memory-mapped safetensors are assigned to it directly.

    Parameters
    ----------
    directory : path
    dtype : torch.dtype, optional
        Default float32.

    Returns
    -------
    transformers.WhisperForConditionalGeneration
        On CPU, in eval mode; ``config._name_or_path`` is ``directory``.
    """
    import torch
    from safetensors.torch import load_file
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    directory = Path(directory)
    dtype = dtype or torch.float32
    config = WhisperConfig.from_pretrained(directory, local_files_only=True)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = load_file(directory / "model.safetensors", device="cpu")
    if dtype != torch.float32:
        state = {k: v.to(dtype) for k, v in state.items()}
    result = model.load_state_dict(state, strict=False, assign=True)
    allowed_missing = {"proj_out.weight"} if config.tie_word_embeddings else set()
    if set(result.missing_keys) - allowed_missing or result.unexpected_keys:
        raise ModelLoadError(f"cached model does not match WhisperForConditionalGeneration: missing "
                             f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}", path=directory,
                             hint="delete this cache directory; it will be converted again")
    if config.tie_word_embeddings:
        model.proj_out.weight = model.model.decoder.embed_tokens.weight
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise ModelLoadError(f"cached model left tensors unset: {leftover[:5]}", path=directory,
                             hint="delete this cache directory; it will be converted again")
    model.generation_config = GenerationConfig.from_pretrained(directory, local_files_only=True)
    model.config._name_or_path = str(directory)
    model.config.dtype = dtype  # as from_pretrained records it
    model.name_or_path = str(directory)
    return model.eval()

