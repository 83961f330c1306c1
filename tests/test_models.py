"""SpeechEncoder on small random models of every architecture: layers, lengths, padding, Whisper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.errors import ModelError
from analysis.models import load_encoder
from analysis.testing import random_model


def _waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) * 0.1 for n in lengths]


@pytest.mark.parametrize("arch", ["wavlm", "hubert", "wav2vec2", "whisper"])
def test_encoder_returns_every_layer_with_valid_lengths(arch):
    enc = load_encoder(random_model(arch), device="cpu")
    hidden, valid = enc.forward(_waves([16000, 8000]))
    assert enc.n_layers == 2 and hidden.shape == (3, 2, 50 if arch == "whisper" else 49, 32)
    assert list(valid) == list(enc.valid_frames([16000, 8000]))
    assert torch.all(hidden[:, 1, valid[1]:] == 0)
    assert abs(enc.frame_spec.shift - 0.02) < 1e-12


def test_layer_zero_is_the_output_before_the_first_transformer_layer():
    model = random_model("wavlm")
    enc = load_encoder(model, device="cpu")
    x = _waves([8000])
    hidden, _ = enc.forward(x)
    with torch.inference_mode():
        ref = model(torch.from_numpy((x[0] - x[0].mean()) / np.sqrt(x[0].var() + 1e-7))[None],
                    output_hidden_states=True).hidden_states
    for i in range(3):
        torch.testing.assert_close(hidden[i, 0], ref[i][0])


def test_group_norm_model_batched_equals_one_at_a_time():
    model = random_model("wav2vec2", feat_extract_norm="group")
    enc = load_encoder(model, device="cpu")
    assert not enc.pads_safely
    waves = _waves([16000, 11000, 16000, 6000], seed=1)
    batched, valid = enc.forward(waves)
    for b, w in enumerate(waves):
        single, v = enc.forward([w])
        torch.testing.assert_close(batched[:, b, : v[0]], single[:, 0], rtol=1e-5, atol=1e-5)
    # the naive way (zero padding) really changes a group-norm model: the guard above is needed
    padded = np.zeros(16000, np.float32)
    padded[:6000] = (waves[3] - waves[3].mean()) / np.sqrt(waves[3].var() + 1e-7)
    with torch.inference_mode():
        naive = model(torch.from_numpy(padded)[None], output_hidden_states=True).hidden_states[-1][0, : valid[3]]
    assert (naive - batched[-1, 3, : valid[3]]).abs().max() > 1e-3


def test_layer_norm_model_is_padded_with_a_mask_and_still_equals_one_at_a_time():
    enc = load_encoder(random_model("wavlm", feat_extract_norm="layer"), device="cpu")
    assert enc.pads_safely
    waves = _waves([16000, 9000], seed=2)
    batched, valid = enc.forward(waves)
    single, v = enc.forward([waves[1]])
    torch.testing.assert_close(batched[:, 1, : v[0]], single[:, 0], rtol=1e-4, atol=1e-4)


def test_whisper_crop_equals_transformers_encoder_cropped():
    model = random_model("whisper")
    enc = load_encoder(model, device="cpu")
    waves = _waves([24000, 7000], seed=3)
    hidden, valid = enc.forward(waves)
    mel = enc._mel(waves, sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        ref = model(mel, output_hidden_states=True).hidden_states
    assert len(ref) == 3 and ref[0].shape[1] == 1500
    for i in range(3):
        for b in range(2):
            torch.testing.assert_close(hidden[i, b, : valid[b]], ref[i][b, : valid[b]], rtol=1e-4, atol=1e-4)


def test_whisper_trim_runs_on_the_real_length_and_differs_from_crop():
    model = random_model("whisper")
    waves = _waves([24000, 7000], seed=3)
    crop, v1 = load_encoder(model, device="cpu").forward(waves)
    trim_enc = load_encoder(model, device="cpu", whisper_mode="trim")
    assert not trim_enc.pads_safely
    trim, v2 = trim_enc.forward(waves)
    assert list(v1) == list(v2) == [75, 22]
    single, _ = trim_enc.forward([waves[1]])
    torch.testing.assert_close(trim[:, 1, :22], single[:, 0], rtol=1e-5, atol=1e-5)
    assert (trim - crop).abs().max() > 1e-4  # trim is a documented approximation, not the same numbers


def test_encoder_takes_whisper_inputs_past_30_s_and_raises_on_too_short_input():
    enc = load_encoder(random_model("whisper"), device="cpu")
    hidden, valid = enc.forward(_waves([16000 * 31, 16000 * 2]))
    assert list(valid) == [1550, 100] and hidden.shape[2] == 1550
    with pytest.raises(ModelError, match="shorter than one frame"):
        load_encoder(random_model("hubert"), device="cpu").forward(_waves([300]))


def test_half_precision_is_refused_on_cpu():
    with pytest.raises(ModelError, match="only offered on CUDA"):
        load_encoder(random_model("hubert"), device="cpu", dtype="float16")


@pytest.mark.parametrize("arch", ["wavlm", "whisper", "hubert"])
def test_bfloat16_autocast_on_cpu_stays_within_the_gpu_check_of_float32(arch):
    """The autocast path the CUDA float16/bfloat16 runs take, exercised on CPU in bfloat16: weights stay
    float32, hidden states come out float32, and every layer keeps cosine >= 0.999 with float32."""
    model = random_model(arch)
    waves = _waves([16000, 11000], seed=3)
    ref, valid = load_encoder(model, device="cpu").forward(waves)
    enc = load_encoder(model, device="cpu", dtype="bfloat16")
    half, valid_half = enc.forward(waves)
    assert half.dtype == torch.float32 and np.array_equal(valid, valid_half)
    assert all(p.dtype == torch.float32 for p in enc.model.parameters())
    assert not torch.equal(half, ref)  # autocast did run in bfloat16
    for layer in range(ref.shape[0]):
        for b, n in enumerate(valid):
            cos = torch.nn.functional.cosine_similarity(half[layer, b, :n], ref[layer, b, :n], dim=-1)
            assert float(cos.mean()) >= 0.999, (layer, b, float(cos.mean()))
    assert enc.settings()["dtype"] == "bfloat16"


def test_settings_record_normalisation_and_whisper_mode():
    assert load_encoder(random_model("hubert"), device="cpu", do_normalize=False).settings()["do_normalize"] is False
    assert load_encoder(random_model("whisper"), device="cpu", whisper_mode="trim").settings()["whisper_mode"] == "trim"


def test_load_encoder_reads_do_normalize_from_a_local_checkpoint(tmp_path):
    model = random_model("wavlm")
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text('{"do_normalize": false}')
    enc = load_encoder(str(tmp_path), device="cpu")
    assert enc.frontend.do_normalize is False and enc.model_id == str(tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_half_precision_on_cuda_is_close_to_float32():
    model = random_model("wavlm")
    waves = _waves([16000])
    ref, _ = load_encoder(model, device="cpu").forward(waves)
    half, _ = load_encoder(random_model("wavlm"), device="cuda", dtype="bfloat16").forward(waves)
    assert torch.nn.functional.cosine_similarity(half.cpu()[-1, 0], ref[-1, 0], dim=-1).mean() > 0.98


def test_forward_accepts_a_padded_batch_with_lengths():
    enc = load_encoder(random_model("hubert"), device="cpu")
    waves = _waves([8000, 5000], seed=4)
    padded = np.zeros((2, 8000), np.float32)
    padded[0], padded[1, :5000] = waves[0], waves[1]
    a, va = enc.forward(waves)
    b, vb = enc.forward(torch.from_numpy(padded), lengths=[8000, 5000])
    assert list(va) == list(vb)
    torch.testing.assert_close(a, b)


def test_forward_with_grad_lets_gradients_reach_the_top_layer():
    enc = load_encoder(random_model("wavlm"), device="cpu")
    hidden, _ = enc(_waves([8000]), grad=True)
    hidden[-1].sum().backward()
    top = enc.model.encoder.layers[-1].feed_forward.output_dense.weight
    assert top.grad is not None and top.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["wavlm", "whisper"])
def test_a_built_encoder_survives_pickling_with_the_same_outputs_and_identity(arch):
    """Ray sends a built encoder to its workers by pickle; WavLM's weight-normed convolution is a
    parametrized module, which torch refuses to pickle whole."""
    import pickle

    enc = load_encoder(random_model(arch), device="cpu")
    again = pickle.loads(pickle.dumps(enc))
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    a, va = enc.forward([wave])
    b, vb = again.forward([wave])
    assert torch.equal(a, b) and np.array_equal(va, vb)
    assert again.identity == enc.identity and again.settings() == enc.settings()
