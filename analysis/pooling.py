"""Mean pooling of frames over spans (utterances, segments), vectorised with cumulative sums.

A span ``[first, stop)`` of frames is averaged as ``(C[stop] - C[first]) / (stop - first)`` where
``C`` is the cumulative sum of the frames along time (accumulated in float64 so that long
utterances lose no precision). One cumulative sum per layer serves every span of every utterance
of a batch at once: there is no Python loop over frames, segments or utterances.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import AnalysisError

POOLING = ("mean",)


def _check_how(how: str) -> None:
    if how not in POOLING:
        raise AnalysisError(f"unknown pooling {how!r}", hint=f"use one of {', '.join(POOLING)}")


def pool_batch(hidden: torch.Tensor, batch_index, first, stop, *, how: str = "mean") -> torch.Tensor:
    """Mean of frames ``first..stop-1`` of utterance ``batch_index`` for every span, every layer.

    Parameters
    ----------
    hidden : torch.Tensor, shape (n_layers, B, T, H), any float dtype
        Hidden states of a batch (frames past an utterance's end are ignored as long as spans stay
        within its valid frames).
    batch_index, first, stop : array of int, shape (n_spans,)
        Utterance in the batch and frame range of each span; ``0 <= first < stop <= T``.
    how : ``"mean"``

    Returns
    -------
    torch.Tensor, float32, shape (n_layers, n_spans, H), on ``hidden``'s device
    """
    _check_how(how)
    n_layers, b, t, h = hidden.shape
    dev = hidden.device
    bi = torch.as_tensor(np.asarray(batch_index, np.int64), device=dev)
    f = torch.as_tensor(np.asarray(first, np.int64), device=dev)
    s = torch.as_tensor(np.asarray(stop, np.int64), device=dev)
    if bool(((s <= f) | (f < 0) | (s > t) | (bi < 0) | (bi >= b)).any()):
        raise AnalysisError("a span is empty or outside the batch's frames",
                            hint="compute spans with analysis.frames.frames_for_segments")
    # flat frame positions in a (B * (T + 1)) cumulative-sum table with a zero row per utterance
    lo = bi * (t + 1) + f
    hi = bi * (t + 1) + s
    count = (s - f).to(torch.float64).unsqueeze(1)
    out = torch.empty((n_layers, bi.numel(), h), dtype=torch.float32, device=dev)
    # float64 accumulation is not offered by every accelerator dtype path; MPS lacks it
    acc = torch.float64 if dev.type != "mps" else torch.float32
    for layer in range(n_layers):  # one cumulative sum per layer bounds memory to one layer
        c = torch.zeros((b, t + 1, h), dtype=acc, device=dev)
        torch.cumsum(hidden[layer].to(acc), dim=1, out=c[:, 1:])
        c = c.reshape(b * (t + 1), h)
        out[layer] = ((c[hi] - c[lo]) / count).to(torch.float32)
    return out


def pool_segments(hidden, spans, *, how: str = "mean") -> np.ndarray:
    """Mean-pool one utterance's frames over segments (librosa-style: arrays in, array out).

    Parameters
    ----------
    hidden : ndarray, shape (T, H) or (n_layers, T, H)
        Frames of one utterance (one layer or all).
    spans : ndarray of int, shape (n_segments, 2)
        ``[first, stop)`` frame ranges, as :func:`analysis.frames.frames_for_segments` gives them.
    how : ``"mean"``

    Returns
    -------
    ndarray, float32, shape (n_segments, H) or (n_layers, n_segments, H)
    """
    x = torch.as_tensor(np.asarray(hidden))
    single = x.ndim == 2
    if single:
        x = x.unsqueeze(0)
    spans = np.asarray(spans, np.int64).reshape(-1, 2)
    out = pool_batch(x.unsqueeze(1), np.zeros(len(spans), np.int64), spans[:, 0], spans[:, 1], how=how).numpy()
    return out[0] if single else out


def pool_utterances(hidden, valid_frames, *, how: str = "mean") -> np.ndarray:
    """Mean over each utterance's valid frames.

    Parameters
    ----------
    hidden : ndarray or Tensor, shape (n_layers, B, T, H)
    valid_frames : array of int, shape (B,)

    Returns
    -------
    ndarray, float32, shape (n_layers, B, H)
    """
    x = torch.as_tensor(hidden) if not isinstance(hidden, torch.Tensor) else hidden
    v = np.asarray(valid_frames, np.int64)
    out = pool_batch(x, np.arange(len(v)), np.zeros(len(v), np.int64), v, how=how)
    return out.cpu().numpy()
