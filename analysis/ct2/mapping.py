"""The CTranslate2 ``WhisperSpec`` -> transformers ``WhisperForConditionalGeneration`` mapping.

Every stored variable is placed exactly once or the model is refused: nothing is guessed, left
over or silently dropped (a non-zero key bias, which transformers cannot represent, is an error).
Quantised weights (int8 per-row scales, int16 one scale, bfloat16) are widened to float32.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import CT2FormatError
from .reader import CT2Checkpoint

__all__ = ["WhisperDims", "ct2_to_hf_state_dict"]

# common_spec.Activation: RELU, GELUTanh, SWISH, GELU, GELUSigmoid, Tanh, Sigmoid
_ACTIVATION_GELU = 3


@dataclass(frozen=True)
class WhisperDims:
    """Architecture read from tensor shapes and spec attributes (nothing is assumed)."""

    vocab_size: int
    num_mel_bins: int
    d_model: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_layers: int
    decoder_attention_heads: int
    decoder_ffn_dim: int
    max_source_positions: int
    max_target_positions: int
    tie_word_embeddings: bool


class _Taker:
    """Hands out checkpoint variables by name, each exactly once, converted to float32."""

    def __init__(self, ckpt: CT2Checkpoint) -> None:
        self.ckpt = ckpt
        self.used: set[str] = set()

    def error(self, message: str) -> CT2FormatError:
        return CT2FormatError(
            message,
            path=self.ckpt.paths[0],
            hint="this is not a CTranslate2 WhisperSpec model this converter understands; "
            "re-convert the original Whisper with ct2-transformers-converter",
        )

    def has(self, name: str) -> bool:
        return name in self.ckpt.variables or name in self.ckpt.aliases

    def raw(self, name: str) -> np.ndarray:
        if not self.has(name):
            raise self.error(f"variable {name!r} is missing")
        if name in self.used:
            raise self.error(f"variable {name!r} would be assigned twice")
        self.used.add(name)
        return self.ckpt.variables[self.ckpt.resolve(name)]

    def scalar(self, name: str) -> int:
        arr = self.raw(name)
        if arr.size != 1:
            raise self.error(f"attribute {name!r} should be a scalar, found shape {list(arr.shape)}")
        return int(arr.reshape(()))

    def float32(self, name: str) -> np.ndarray:
        """Variable ``name`` as a new float32 array, dequantised when stored as int8/int16."""
        arr = self.raw(name)
        kind = self.ckpt.dtypes[self.ckpt.resolve(name)]
        if kind == "bfloat16":
            return (arr.astype(np.uint32) << 16).view(np.float32)
        if kind in ("int8", "int16"):
            # CTranslate2 quantises weights as round(w * scale): int8 per output row, int16 one scale.
            scale = self.float32(name + "_scale")
            if kind == "int8":
                return arr.astype(np.float32) / scale.reshape(-1, *([1] * (arr.ndim - 1)))
            return arr.astype(np.float32) / scale.reshape(())
        if kind == "int32":
            raise self.error(f"variable {name!r} is int32, not a weight")
        return arr.astype(np.float32)  # always a copy: the checkpoint's map is read-only

    def check_all_used(self) -> None:
        unused = sorted(set(self.ckpt.variables) | set(self.ckpt.aliases))
        unused = [n for n in unused if n not in self.used
                  and not (n in self.ckpt.variables and any(self.ckpt.resolve(u) == n for u in self.used))]
        if unused:
            shown = ", ".join(unused[:8]) + (f" ... ({len(unused)} in all)" if len(unused) > 8 else "")
            raise self.error(f"variables with no place in WhisperForConditionalGeneration: {shown}")


def _layer_count(names: Iterable[str], prefix: str, taker: _Taker) -> int:
    pattern = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
    indices = {int(m.group(1)) for n in names if (m := pattern.match(n))}
    if indices != set(range(len(indices))):
        raise taker.error(f"{prefix} layers are not numbered 0..N-1: found {sorted(indices)}")
    return len(indices)


def ct2_to_hf_state_dict(ckpt: CT2Checkpoint) -> tuple[dict[str, np.ndarray], WhisperDims]:
    """Map every variable of a CTranslate2 ``WhisperSpec`` onto transformers parameter names.

    Parameters
    ----------
    ckpt : CT2Checkpoint

    Returns
    -------
    state : dict of str to np.ndarray
        transformers ``WhisperForConditionalGeneration`` keys (``model.encoder.conv1.weight`` ...),
        float32 arrays. ``proj_out.weight`` is included only when it is not tied to the token
        embeddings (CTranslate2 stores the tie as an alias).
    dims : WhisperDims

    Raises
    ------
    CT2FormatError
        When a variable is missing, left over, of the wrong shape, or when a block that transformers
        cannot represent is non-zero (the key bias of attention).
    """
    if ckpt.spec_name != "WhisperSpec":
        raise CT2FormatError(f"spec {ckpt.spec_name!r} is not a Whisper model (expected 'WhisperSpec')",
                             path=ckpt.paths[0], hint="pass a faster-whisper / CTranslate2 Whisper directory")
    t = _Taker(ckpt)
    names = list(ckpt.variables) + list(ckpt.aliases)
    n_enc, n_dec = _layer_count(names, "encoder", t), _layer_count(names, "decoder", t)
    if not n_enc or not n_dec:
        raise t.error(f"found {n_enc} encoder and {n_dec} decoder layers; a Whisper model has both")
    enc_heads, dec_heads = _spec_attributes(t)
    b = _StateBuilder(t)
    d, n_mels, n_enc_pos = b.encoder_front()
    enc_ffn = b.ffn_dim("encoder")
    for i in range(n_enc):
        b.encoder_layer(i, d, enc_ffn)
    vocab, n_dec_pos = b.decoder_front(d)
    dec_ffn = b.ffn_dim("decoder")
    for i in range(n_dec):
        b.decoder_layer(i, d, dec_ffn)
    tied = b.output_projection(vocab, d)
    t.check_all_used()
    if d % enc_heads or d % dec_heads:
        raise t.error(f"d_model {d} is not divisible by the head counts {enc_heads}/{dec_heads}")
    dims = WhisperDims(
        vocab_size=vocab, num_mel_bins=n_mels, d_model=d,
        encoder_layers=n_enc, encoder_attention_heads=enc_heads, encoder_ffn_dim=enc_ffn,
        decoder_layers=n_dec, decoder_attention_heads=dec_heads, decoder_ffn_dim=dec_ffn,
        max_source_positions=n_enc_pos, max_target_positions=n_dec_pos,
        tie_word_embeddings=tied,
    )
    return b.state, dims


def _spec_attributes(t: _Taker) -> tuple[int, int]:
    """The encoder's and decoder's head counts; every other spec attribute is consumed and checked to
    be what transformers computes."""
    enc_heads, dec_heads = t.scalar("encoder/num_heads"), t.scalar("decoder/num_heads")
    fixed = {"decoder/activation": _ACTIVATION_GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
             "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}
    for name, want in fixed.items():
        if t.has(name) and (got := t.scalar(name)) != want:
            raise t.error(f"attribute {name!r} is {got}, but transformers' Whisper needs {want}")
    for name in ("decoder/alignment_heads", "decoder/alignment_layer"):
        if t.has(name):  # decoding-time options of CTranslate2 (alignment from config.json instead)
            t.scalar(name)
    for name in ("decoder/alibi_use_positive_positions", "decoder/scale_alibi"):
        if t.has(name):  # ALiBi options (CTranslate2 >= 4 writes them); moot with ALiBi off, checked above
            t.scalar(name)
    return enc_heads, dec_heads


class _StateBuilder:
    """Builds the transformers state dict from a :class:`_Taker`: every key placed once, with the
    shape it must have (``d``: d_model)."""

    def __init__(self, t: _Taker) -> None:
        self.t = t
        self.state: dict[str, np.ndarray] = {}

    def put(self, key: str, value: np.ndarray, shape: tuple[int, ...], source: str) -> None:
        if tuple(value.shape) != tuple(shape):
            raise self.t.error(f"{source}: shape {list(value.shape)}, expected {list(shape)} for {key}")
        if key in self.state:
            raise self.t.error(f"{key} would be assigned twice")
        self.state[key] = value

    def layer_norm(self, src: str, dst: str, d: int) -> None:
        self.put(f"{dst}.weight", self.t.float32(f"{src}/gamma"), (d,), f"{src}/gamma")
        self.put(f"{dst}.bias", self.t.float32(f"{src}/beta"), (d,), f"{src}/beta")

    def linear(self, src: str, dst: str, out_dim: int, in_dim: int) -> None:
        self.put(f"{dst}.weight", self.t.float32(f"{src}/weight"), (out_dim, in_dim), f"{src}/weight")
        self.put(f"{dst}.bias", self.t.float32(f"{src}/bias"), (out_dim,), f"{src}/bias")

    def split_rows(self, src: str, parts: Sequence[str], d: int) -> None:
        """A fused projection: rows [i*d:(i+1)*d] of weight/bias go to parts[i] (a k_proj has no bias)."""
        t = self.t
        w, b = t.float32(f"{src}/weight"), t.float32(f"{src}/bias")
        if w.shape != (len(parts) * d, d) or b.shape != (len(parts) * d,):
            raise t.error(f"{src}: shapes {list(w.shape)}/{list(b.shape)}, expected "
                          f"{[len(parts) * d, d]}/{[len(parts) * d]}")
        for i, dst in enumerate(parts):
            self.put(f"{dst}.weight", w[i * d:(i + 1) * d], (d, d), f"{src}/weight")
            if dst.endswith("k_proj"):
                kb = b[i * d:(i + 1) * d]
                if np.any(kb != 0):
                    # transformers' k_proj has no bias; dropping a non-zero one would change the model
                    raise t.error(f"{src}/bias: key bias block is not zero (max |b| = {np.abs(kb).max():.3g})")
            else:
                self.put(f"{dst}.bias", b[i * d:(i + 1) * d], (d,), f"{src}/bias")

    def ffn_dim(self, side: str) -> int:
        """The feed-forward width of ``encoder`` or ``decoder`` layers (0 without a first layer's)."""
        name = f"{side}/layer_0/ffn/linear_0/weight"
        ckpt = self.t.ckpt
        return ckpt.variables[ckpt.resolve(name)].shape[0] if self.t.has(name) else 0

    def encoder_front(self) -> tuple[int, int, int]:
        """Convolutions, positions and final norm of the encoder; their shapes define the model:
        returns (d_model, mel bins, encoder positions)."""
        t, put = self.t, self.put
        conv1 = t.float32("encoder/conv1/weight")
        if conv1.ndim != 3:
            raise t.error(f"encoder/conv1/weight has shape {list(conv1.shape)}, expected (d_model, n_mels, 3)")
        d, n_mels, _ = conv1.shape
        put("model.encoder.conv1.weight", conv1, (d, n_mels, 3), "encoder/conv1/weight")
        put("model.encoder.conv1.bias", t.float32("encoder/conv1/bias"), (d,), "encoder/conv1/bias")
        put("model.encoder.conv2.weight", t.float32("encoder/conv2/weight"), (d, d, 3), "encoder/conv2/weight")
        put("model.encoder.conv2.bias", t.float32("encoder/conv2/bias"), (d,), "encoder/conv2/bias")
        enc_pos = t.float32("encoder/position_encodings/encodings")
        put("model.encoder.embed_positions.weight", enc_pos, (enc_pos.shape[0], d), "encoder/position_encodings")
        self.layer_norm("encoder/layer_norm", "model.encoder.layer_norm", d)
        return d, n_mels, enc_pos.shape[0]

    def encoder_layer(self, i: int, d: int, ffn: int) -> None:
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        attn = f"{dst}.self_attn"
        self.split_rows(f"{src}/self_attention/linear_0", [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"], d)
        self.linear(f"{src}/self_attention/linear_1", f"{attn}.out_proj", d, d)
        self.layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", d)
        self.linear(f"{src}/ffn/linear_0", f"{dst}.fc1", ffn, d)
        self.linear(f"{src}/ffn/linear_1", f"{dst}.fc2", d, ffn)
        self.layer_norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", d)

    def decoder_front(self, d: int) -> tuple[int, int]:
        """Token embeddings, positions and final norm of the decoder: returns (vocabulary, positions)."""
        t, put = self.t, self.put
        emb = t.float32("decoder/embeddings/weight")
        vocab = emb.shape[0]
        put("model.decoder.embed_tokens.weight", emb, (vocab, d), "decoder/embeddings/weight")
        dec_pos = t.float32("decoder/position_encodings/encodings")
        put("model.decoder.embed_positions.weight", dec_pos, (dec_pos.shape[0], d), "decoder/position_encodings")
        self.layer_norm("decoder/layer_norm", "model.decoder.layer_norm", d)
        return vocab, dec_pos.shape[0]

    def decoder_layer(self, i: int, d: int, ffn: int) -> None:
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        attn, cross = f"{dst}.self_attn", f"{dst}.encoder_attn"
        self.split_rows(f"{src}/self_attention/linear_0", [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"], d)
        self.linear(f"{src}/self_attention/linear_1", f"{attn}.out_proj", d, d)
        self.layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", d)
        self.linear(f"{src}/attention/linear_0", f"{cross}.q_proj", d, d)
        self.split_rows(f"{src}/attention/linear_1", [f"{cross}.k_proj", f"{cross}.v_proj"], d)
        self.linear(f"{src}/attention/linear_2", f"{cross}.out_proj", d, d)
        self.layer_norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", d)
        self.linear(f"{src}/ffn/linear_0", f"{dst}.fc1", ffn, d)
        self.linear(f"{src}/ffn/linear_1", f"{dst}.fc2", d, ffn)
        self.layer_norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", d)

    def output_projection(self, vocab: int, d: int) -> bool:
        """``proj_out`` unless CTranslate2 aliases it to the embeddings (returns whether it is tied);
        a projection bias must be zero."""
        t, ckpt = self.t, self.t.ckpt
        tied = ckpt.resolve("decoder/projection/weight") == ckpt.resolve("decoder/embeddings/weight")
        if tied:
            t.raw("decoder/projection/weight")
        else:
            self.put("proj_out.weight", t.float32("decoder/projection/weight"), (vocab, d),
                     "decoder/projection/weight")
        if t.has("decoder/projection/bias"):
            bias = t.float32("decoder/projection/bias")
            if np.any(bias != 0):
                raise t.error("decoder/projection/bias is not zero; transformers' Whisper proj_out has no bias")
        return tied
