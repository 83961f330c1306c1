"""Deep CORAL: the one place that computes the distance between two feature covariances.

Sun & Saenko (2016), "Deep CORAL: Correlation Alignment for Deep Domain Adaptation":

    CORAL(S, T) = || C_S - C_T ||_F^2 / (4 d^2),

with ``C_X`` the unbiased (``n - 1``) covariance of the rows of ``X`` (``(n, d)``). It is always
computed in at least float32, even inside a float16/bfloat16 autocast region: covariances of
half-precision activations lose most of their digits (sums of n products) and the loss would be
noise at the scale of 1/(4 d^2).
"""

from __future__ import annotations

import torch

from .errors import TrainError


def _covariance(x: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance of the rows of ``x`` ``(..., n, d)`` -> ``(..., d, d)``.

    Centring before the product (rather than ``X^T X - n m m^T``) avoids the catastrophic
    cancellation of the one-pass formula when the mean is large compared with the spread.
    """
    centred = x - x.mean(dim=-2, keepdim=True)
    return centred.transpose(-1, -2) @ centred / (x.shape[-2] - 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Deep CORAL loss between a source and a target batch of features.

    Parameters
    ----------
    source : torch.Tensor, shape (n_source, d) or (n_layers, n_source, d)
        Source-domain features (any float dtype; computed in float32 or float64 if given).
        A leading layer axis computes one distance per layer in one batched product.
    target : torch.Tensor, shape (n_target, d) or (n_layers, n_target, d)
        Target-domain features, same ``d`` (and layers). ``n_source`` and ``n_target`` may differ.

    Returns
    -------
    torch.Tensor, shape () or (n_layers,), float32 (float64 for float64 input)
        ``||C_S - C_T||_F^2 / (4 d^2)``; differentiable with respect to both inputs.

    Raises
    ------
    TrainError
        If the inputs are not 2-D/3-D alike, their widths or layers differ, or either has fewer
        than 2 rows (a covariance needs two samples).
    """
    if source.ndim not in (2, 3) or target.ndim != source.ndim or source.shape[:-2] != target.shape[:-2]:
        raise TrainError(
            f"coral_loss expects (n, d) or (n_layers, n, d) features of both domains, got shapes "
            f"{tuple(source.shape)} and {tuple(target.shape)}",
            hint="pool frame sequences (e.g. mean over valid frames) before computing CORAL",
        )
    if source.shape[-1] != target.shape[-1]:
        raise TrainError(
            f"coral_loss: feature widths differ ({source.shape[-1]} vs {target.shape[-1]})",
            hint="compare the same layer/adapter output of both domains",
        )
    if source.shape[-2] < 2 or target.shape[-2] < 2:
        raise TrainError(
            f"coral_loss needs at least 2 rows per domain, got {source.shape[-2]} and {target.shape[-2]}",
            hint="use a batch size of at least 2 (drop_last for the final short batch)",
        )
    # float64 stays float64 (gradient checks, references); everything else runs in float32.
    dtype = torch.float64 if torch.float64 in (source.dtype, target.dtype) else torch.float32
    device_type = source.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        cs = _covariance(source.to(dtype))
        ct = _covariance(target.to(dtype))
        d = source.shape[-1]
        return (cs - ct).square().sum(dim=(-2, -1)) / (4.0 * d * d)


def coral_relative(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scale-free CORAL: ``||C_S - C_T||_F^2 / (||C_S||_F^2 + ||C_T||_F^2)``, in [0, 2].

    Deep CORAL shrinks when both domains' features shrink together, which a trained adapter can
    do; this ratio does not change when both inputs are scaled by the same factor, so a fall in
    it is a change of shape, not of scale. Same shapes and rules as :func:`coral_loss`.
    """
    coral_loss(source, target)  # the same input checks
    dtype = torch.float64 if torch.float64 in (source.dtype, target.dtype) else torch.float32
    with torch.autocast(device_type=source.device.type, enabled=False):
        cs = _covariance(source.to(dtype))
        ct = _covariance(target.to(dtype))
        num = (cs - ct).square().sum(dim=(-2, -1))
        den = cs.square().sum(dim=(-2, -1)) + ct.square().sum(dim=(-2, -1))
        return num / den.clamp_min(torch.finfo(dtype).tiny)
