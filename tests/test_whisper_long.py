"""Whisper on utterances past 30 s: overlapping windows stitched on the frame grid.

Equality where both are possible: a single pass over a long input needs a model with more positions
than Whisper's 1500, and a stitched pass can only equal it when the model's frames do not depend on
their context. So both are built from one small random Whisper made *frame-local* (attention output
projections and positional embeddings zeroed, leaving the convolutional front end and the per-frame
feed-forward blocks): model A with the real 1500-position window runs stitched; model B, the same
weights with 3000 positions, runs the 40 s input in one pass. Their frames must agree to float32
rounding (atol 1e-5 on values of order 1: the same arithmetic in other tensor shapes). This proves
the stitching itself (window placement, the kept ranges, the mel grid, the padding of the last window)
frame-exact; what context a full model loses at 2.5 s from a window edge is a property of the model,
measured in docs/analysis.md, not assumed away here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.frames import plan_windows
from analysis.models import WHISPER_OVERLAP, load_encoder
from analysis.testing import random_model


def _frame_local(model, positions: int | None = None):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    if positions is not None:
        cfg = model.config.__class__(**{**model.config.to_dict(), "max_source_positions": positions})
        other = WhisperEncoder(cfg).eval()
        state = {k: v for k, v in model.state_dict().items() if "embed_positions" not in k}
        other.load_state_dict(state, strict=False)
        model = other
    with torch.no_grad():
        model.embed_positions.weight.zero_()
        for layer in model.layers:
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()
    return model


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)  # loud and quiet stretches, as in speech
    return (0.1 * env * (np.sin(2 * np.pi * 180 * t) + 0.3 * rng.standard_normal(t.size))).astype(np.float32)


@pytest.mark.parametrize("mode", ["crop", "trim"])
def test_stitched_windows_equal_a_single_pass_on_the_frame_grid(mode):
    a = _frame_local(random_model("whisper", seed=3))
    b = _frame_local(random_model("whisper", seed=3), positions=3000)
    wave = _speechlike(40.0)
    stitched, v1 = load_encoder(a, device="cpu", whisper_mode=mode).forward([wave])
    single, v2 = load_encoder(b, device="cpu", whisper_mode="trim").forward([wave])
    assert list(v1) == list(v2) == [2000]
    assert len(plan_windows(2000, window=1500, overlap=WHISPER_OVERLAP)) == 2  # really stitched
    torch.testing.assert_close(stitched, single, rtol=0, atol=1e-5)


def test_a_stitched_frame_keeps_at_least_half_the_overlap_of_context():
    for n in (1501, 2000, 2999, 4000, 15000):
        plan = plan_windows(n, window=1500, overlap=250)
        assert plan[0].keep_from == 0 and plan[-1].keep_to == n
        # the kept ranges tile the input
        assert all(x.keep_to == y.keep_from for x, y in zip(plan, plan[1:], strict=False))
        for k, w in enumerate(plan):
            if k > 0:
                assert w.keep_from - w.start >= 125
            if k < len(plan) - 1:
                assert w.start + w.length - w.keep_to >= 125


def test_a_full_random_whisper_runs_a_long_input_in_both_modes():
    wave = _speechlike(65.0, seed=1)
    for mode in ("crop", "trim"):
        hidden, valid = load_encoder(random_model("whisper"), device="cpu", whisper_mode=mode).forward([wave])
        assert list(valid) == [3250] and hidden.shape == (3, 1, 3250, 32)
        assert torch.isfinite(hidden).all() and hidden[:, 0].abs().sum(-1).min() > 0  # no frame left empty


def test_a_long_input_in_bfloat16_runs_as_autocast_and_stays_close_to_float32():
    """Half precision is autocast with float32 weights (issue 13): the stitched path too, not only
    single windows; every layer keeps a mean cosine >= 0.999 with float32."""
    model = random_model("whisper")
    wave = _speechlike(40.0)
    ref = load_encoder(model, device="cpu", whisper_mode="trim").whisper_long(wave)
    enc = load_encoder(model, device="cpu", whisper_mode="trim", dtype="bfloat16")
    half = enc.whisper_long(wave)
    assert half.dtype == torch.float32 and half.shape == ref.shape and not torch.equal(half, ref)
    for layer in range(ref.shape[0]):
        cos = torch.nn.functional.cosine_similarity(half[layer], ref[layer], dim=-1)
        assert float(cos.mean()) >= 0.999, (layer, float(cos.mean()))
