"""The transformers tokenizer, model config and generation config of a converted Whisper.

Built from the shapes found in the weights (:class:`~analysis.ct2.mapping.WhisperDims`), the
CTranslate2 ``config.json`` (suppressed tokens, language ids, alignment heads) and the tokenizer
files beside the model.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelLoadError
from .mapping import WhisperDims
from .source import CT2Source

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedTokenizerBase, WhisperConfig, WhisperTokenizer

logger = logging.getLogger(__name__)

__all__ = ["build_configs", "build_tokenizer"]


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Whisper's special token ids by name, read from the tokenizer (English-only models shift them)."""
    vocab = tokenizer.get_vocab()
    names = ("<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
             "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>")
    out = {tok: int(vocab[tok]) for tok in names if tok in vocab}
    return out


_RESTORE = "restore it from the original model, or put the model's tokenizer.json beside it"


def _read_vocabulary(path: Path) -> list[str]:
    """The tokens of a CTranslate2 vocabulary file, in id order (``.json``: a list; else one per line)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            tokens = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"the vocabulary is not valid JSON: {exc}", path=path, hint=_RESTORE) from None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ModelLoadError("the vocabulary is not a JSON list of strings", path=path, hint=_RESTORE)
        return tokens
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens = tokens[:-1]  # the file ends with a newline; a real empty token sits inside it
    return tokens


def build_tokenizer(source: CT2Source, vocab_size: int) -> WhisperTokenizer:
    """A transformers ``WhisperTokenizer`` whose ids match the model's output layer.

    ``tokenizer.json`` is used as is; the timestamp tokens ``<|0.00|>`` .. ``<|30.00|>`` that
    faster-whisper leaves out of it are appended (as the CTranslate2 converter does for its
    vocabulary) so that ``len(tokenizer) == vocab_size``. Without ``tokenizer.json``, a decode-only
    tokenizer is built from ``vocabulary.json``/``vocabulary.txt`` (no BPE merges: encoding text is then not faithful).
    """
    from transformers import AddedToken, WhisperTokenizer

    if source.tokenizer is not None:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(source.tokenizer, Path(tmp) / "tokenizer.json")
            tok = WhisperTokenizer.from_pretrained(tmp, local_files_only=True)
    elif source.vocabulary is not None:
        from tokenizers import AddedToken as RawAddedToken
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        tokens = _read_vocabulary(source.vocabulary)
        first_special = next((i for i, t in enumerate(tokens) if t.startswith("<|") and t.endswith("|>")),
                             len(tokens))
        # Built with the tokenizers library in one go (token by token through transformers takes
        # minutes for 1,600 special tokens); ids are the line numbers, as in CTranslate2.
        raw = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens[:first_special])}, merges=[]))
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        raw.decoder = decoders.ByteLevel()
        raw.add_special_tokens([RawAddedToken(t, normalized=False, special=True) for t in tokens[first_special:]])
        with tempfile.TemporaryDirectory() as tmp:
            raw.save(str(Path(tmp) / "tokenizer.json"))
            tok = WhisperTokenizer.from_pretrained(tmp, local_files_only=True)
        logger.warning("%s: no tokenizer.json; built a decode-only tokenizer from %s (no BPE merges, so "
                       "encoding text is not faithful)", source.vocabulary.parent, source.vocabulary.name)
    else:
        raise ModelLoadError("no tokenizer.json, vocabulary.json or vocabulary.txt beside the model",
                             path=source.model_files[0],
                             hint="copy tokenizer.json from the original model (e.g. openai/whisper-base)")
    missing = vocab_size - len(tok)
    if missing > 0:
        existing = [int(m.group(1)) * 2 for t in tok.get_vocab() if (m := re.fullmatch(r"<\|(\d+)\.(\d\d)\|>", t))]
        if existing:
            raise ModelLoadError(f"the tokenizer has {len(tok)} tokens, the model {vocab_size}",
                                 path=source.tokenizer or source.vocabulary, hint="use the model's own tokenizer")
        tok.add_tokens([AddedToken("<|%.2f|>" % (i * 0.02), lstrip=False, rstrip=False, normalized=False,
                                   special=True) for i in range(missing)])
    if len(tok) != vocab_size:
        raise ModelLoadError(f"the tokenizer has {len(tok)} tokens but the model's vocabulary has {vocab_size}",
                             path=source.tokenizer or source.vocabulary,
                             hint="the tokenizer does not belong to this model; use the one it was converted with")
    return tok


def build_configs(dims: WhisperDims, ct2_config: dict[str, Any],
                  tokenizer: PreTrainedTokenizerBase) -> tuple[WhisperConfig, GenerationConfig]:
    """``(WhisperConfig, GenerationConfig)`` from the shapes, the CTranslate2 config and the tokenizer."""
    from transformers import GenerationConfig, WhisperConfig

    ids = _special_tokens(tokenizer)
    eot, sot = ids["<|endoftext|>"], ids.get("<|startoftranscript|>")
    if sot is None:
        raise ModelLoadError("the tokenizer has no <|startoftranscript|> token; it is not a Whisper tokenizer")
    suppress = [int(i) for i in ct2_config.get("suppress_ids") or []]
    begin_suppress = [int(i) for i in ct2_config.get("suppress_ids_begin") or [220, eot]]
    lang_ids = [int(i) for i in ct2_config.get("lang_ids") or []]
    config = WhisperConfig(
        vocab_size=dims.vocab_size, num_mel_bins=dims.num_mel_bins, d_model=dims.d_model,
        encoder_layers=dims.encoder_layers, encoder_attention_heads=dims.encoder_attention_heads,
        encoder_ffn_dim=dims.encoder_ffn_dim, decoder_layers=dims.decoder_layers,
        decoder_attention_heads=dims.decoder_attention_heads, decoder_ffn_dim=dims.decoder_ffn_dim,
        max_source_positions=dims.max_source_positions, max_target_positions=dims.max_target_positions,
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=dims.tie_word_embeddings,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        # Generation settings live in the generation config only (transformers 5 warns when the
        # model config carries them too).
        suppress_tokens=None, begin_suppress_tokens=None,
        architectures=["WhisperForConditionalGeneration"],
    )
    gen = GenerationConfig(
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot,
        max_length=dims.max_target_positions, suppress_tokens=suppress, begin_suppress_tokens=begin_suppress,
        is_multilingual=bool(lang_ids),
        lang_to_id={tokenizer.convert_ids_to_tokens(i): i for i in lang_ids},
        task_to_id={task: ids[f"<|{task}|>"] for task in ("transcribe", "translate") if f"<|{task}|>" in ids},
        no_timestamps_token_id=ids.get("<|notimestamps|>"), prev_sot_token_id=ids.get("<|startofprev|>"),
        max_initial_timestamp_index=50, return_timestamps=False,
        alignment_heads=[[int(a), int(b)] for a, b in ct2_config.get("alignment_heads") or []],
    )
    return config, gen

