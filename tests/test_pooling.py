"""Pooling: cumulative-sum means equal plain slicing means; spans are checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.errors import AnalysisError
from analysis.pooling import pool_batch, pool_segments, pool_utterances


def test_pool_segments_equals_plain_slicing_means():
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 40, 8)).astype(np.float32) * 50 + 100  # large offset: precision
    spans = np.array([[0, 1], [3, 9], [9, 40], [5, 6], [2, 30]])
    got = pool_segments(hidden, spans)
    want = np.stack([[hidden[layer, a:b].mean(0) for a, b in spans] for layer in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(pool_segments(hidden[1], spans), want[1], rtol=1e-6, atol=1e-5)


def test_pool_batch_ignores_padding_beyond_valid_frames():
    rng = np.random.default_rng(1)
    hidden = torch.from_numpy(rng.standard_normal((2, 3, 20, 4)).astype(np.float32))
    valid = np.array([20, 7, 12])
    hidden[:, 1, 7:] = 1e6  # garbage in padding must not leak
    got = pool_utterances(hidden, valid)
    for b, v in enumerate(valid):
        np.testing.assert_allclose(got[:, b], hidden[:, b, :v].double().mean(1).numpy(), rtol=1e-5, atol=1e-6)


def test_pool_batch_raises_on_empty_or_outside_span():
    hidden = torch.zeros((1, 2, 10, 3))
    with pytest.raises(AnalysisError, match="span"):
        pool_batch(hidden, [0], [4], [4])
    with pytest.raises(AnalysisError, match="span"):
        pool_batch(hidden, [2], [0], [1])
    with pytest.raises(AnalysisError, match="pooling"):
        pool_batch(hidden, [0], [0], [1], how="max")
