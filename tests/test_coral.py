"""CORAL: against a float64 numpy reference, gradient check, float32 under autocast, errors."""

import numpy as np
import pytest
import torch

from lam_train.coral import coral_loss, coral_relative
from lam_train.errors import TrainError


def _coral_reference(s: np.ndarray, t: np.ndarray) -> float:
    """Deep CORAL in float64 numpy, written from the paper's formula."""
    d = s.shape[1]
    cs = np.cov(s, rowvar=False, ddof=1)
    ct = np.cov(t, rowvar=False, ddof=1)
    return float(((cs - ct) ** 2).sum() / (4 * d * d))


@pytest.mark.parametrize("n_s, n_t, d", [(32, 32, 8), (50, 17, 64), (3, 2, 5), (200, 300, 128)])
def test_coral_matches_float64_reference_on_random_inputs(n_s, n_t, d):
    rng = np.random.default_rng(n_s * 1000 + d)
    s = rng.normal(size=(n_s, d)) * rng.uniform(0.5, 3, size=d) + 2.0
    t = rng.standard_t(df=5, size=(n_t, d)) @ rng.normal(size=(d, d)) * 0.3 - 1.0
    ref = _coral_reference(s, t)
    got = coral_loss(torch.from_numpy(s), torch.from_numpy(t))
    assert got.dtype == torch.float64
    assert abs(float(got) - ref) / ref < 1e-6
    got32 = coral_loss(torch.from_numpy(s).float(), torch.from_numpy(t).float())
    assert got32.dtype == torch.float32
    assert abs(float(got32) - ref) / ref < 1e-4  # float32 arithmetic, float64 reference


def test_coral_batched_over_layers_equals_per_layer():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 30, 16, generator=g, dtype=torch.float64)
    t = torch.randn(4, 20, 16, generator=g, dtype=torch.float64) * 2
    batched = coral_loss(s, t)
    assert batched.shape == (4,)
    for k in range(4):
        ref = _coral_reference(s[k].numpy(), t[k].numpy())
        assert abs(float(batched[k]) - ref) / ref < 1e-6


def test_coral_passes_gradcheck_in_float64():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(coral_loss, (s, t), eps=1e-6, atol=1e-8)


def test_coral_is_zero_for_identical_covariances_and_positive_otherwise():
    x = torch.randn(40, 6)
    assert float(coral_loss(x, x + 5.0)) == pytest.approx(0.0, abs=1e-10)  # a shift is not a covariance change
    assert float(coral_loss(x, 2 * x)) > 0


def test_coral_stays_float32_under_bfloat16_autocast():
    s = torch.randn(64, 32)
    t = torch.randn(64, 32) * 1.5
    ref = _coral_reference(s.double().numpy(), t.double().numpy())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = coral_loss(s.to(torch.bfloat16), t.to(torch.bfloat16))
    assert out.dtype == torch.float32
    # inputs were rounded to bfloat16 (8 bits), but the covariance itself is float32
    assert abs(float(out) - ref) / ref < 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half_mm = (s - s.mean(0)).T.to(torch.bfloat16) @ (s - s.mean(0)).to(torch.bfloat16)
    assert half_mm.dtype == torch.bfloat16  # the computation autocast would otherwise have done


@pytest.mark.parametrize("s_shape, t_shape",
                         [((10,), (10,)), ((10, 4), (10, 5)), ((1, 4), (10, 4)), ((2, 10, 4), (10, 4))])
def test_coral_raises_on_bad_shapes(s_shape, t_shape):
    with pytest.raises(TrainError):
        coral_loss(torch.randn(*s_shape), torch.randn(*t_shape))


def test_relative_coral_ignores_a_common_scale_but_deep_coral_does_not():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(50, 6, generator=g, dtype=torch.float64)
    t = torch.randn(40, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    assert float(coral_relative(0.01 * s, 0.01 * t)) == pytest.approx(float(coral_relative(s, t)), rel=1e-9)
    assert float(coral_loss(0.01 * s, 0.01 * t)) == pytest.approx(1e-8 * float(coral_loss(s, t)), rel=1e-9)
    assert 0.0 <= float(coral_relative(s, t)) <= 2.0
    assert float(coral_relative(s, s)) == 0.0
