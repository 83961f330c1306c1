"""The emotion classifier: per-layer adapters, a learned softmax layer weighting, a 4-layer head.

Input is a stack of the anchored layers of a speech model, either pooled per utterance
``(n_layers, batch, hidden)`` (the default, from a feature store) or as frame sequences
``(n_layers, batch, frames, hidden)`` with a validity mask (on-the-fly mode). Each layer gets its
own adapter (linear -> non-linearity -> dropout) to a shared width; the adapted layers are fused
by a softmax-weighted sum (as s3prl's weighted sum of layers); frame sequences then pass a small
transformer encoder and are mean-pooled over valid frames; four fully connected layers classify.
The adapted features, pooled per utterance, are what CORAL aligns between languages.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from phonalign.records import EMOTIONS

from .config import ModelConfig

#: The classifier's defaults are the run config's (one source).
_MODEL = ModelConfig()

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class LayerAdapters(nn.Module):
    """One linear adapter per layer, applied to all layers at once (batched weights, no loop).

    Parameters
    ----------
    n_layers : number of stacked input layers.
    in_dim : hidden size of the speech model.
    width : shared output width.
    activation, dropout, normalize_adapted : as :class:`~lam_train.config.ModelConfig`.
    """

    def __init__(self, n_layers: int, in_dim: int, width: int, *, activation: str, dropout: float,
                 normalize_adapted: bool) -> None:
        super().__init__()
        self.normalize_adapted = normalize_adapted
        self.weight = nn.Parameter(torch.empty(n_layers, in_dim, width))
        self.bias = nn.Parameter(torch.zeros(n_layers, width))
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialisation, per layer
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        self.act = _ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (n_layers, B, [T,] in_dim) -> (n_layers, B, [T,] width)."""
        if x.ndim == 3:
            y = torch.einsum("lbh,lhw->lbw", x, self.weight) + self.bias[:, None, :]
        else:
            y = torch.einsum("lbth,lhw->lbtw", x, self.weight) + self.bias[:, None, None, :]
        y = self.drop(self.act(y))
        # Parameter-free layer norm of each adapted vector: without it, the cheapest way to lower
        # CORAL is to shrink every adapted feature towards 0 (the covariances vanish together),
        # which aligns nothing; with it, CORAL can only fall by making the shapes agree.
        return torch.nn.functional.layer_norm(y, y.shape[-1:]) if self.normalize_adapted else y


class LayerWeighting(nn.Module):
    """Learned softmax weights over layers: ``sum_l softmax(w)_l * x_l``. Starts uniform."""

    def __init__(self, n_layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (n_layers, ...) -> (...)."""
        w = torch.softmax(self.logits, dim=0).to(x.dtype)
        return torch.tensordot(w, x, dims=1)

    @property
    def weights(self) -> torch.Tensor:
        """Current layer weights, (n_layers,) summing to 1 (detached)."""
        return torch.softmax(self.logits.detach(), dim=0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the frame axis of valid frames only.

    x : (..., B, T, D); mask : (B, T) bool, True = valid. Returns (..., B, D).
    """
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(-2) / m.sum(-2).clamp_min(1.0)


class EmotionClassifier(nn.Module):
    """Adapters + layer weighting (+ transformer for frames) + 4 fully connected layers.

    Parameters
    ----------
    n_layers : number of anchored input layers.
    in_dim : hidden size of each input layer.
    width : adapter output width (shared by all layers).
    head_hidden : widths of the three hidden layers of the 4-layer head.
    n_classes : number of emotions (4: Neutral, Happiness, Anger, Sadness).
    sequence : True for frame-sequence input (adds the transformer encoder before pooling).

    The other settings and every default are those of :class:`~lam_train.config.ModelConfig`.
    """

    def __init__(
        self,
        *,
        n_layers: int,
        in_dim: int,
        width: int = _MODEL.width,
        head_hidden: tuple[int, int, int] = _MODEL.head_hidden,
        n_classes: int = len(EMOTIONS),
        dropout: float = _MODEL.dropout,
        activation: str = _MODEL.activation,
        sequence: bool = False,
        encoder_layers: int = _MODEL.encoder_layers,
        encoder_heads: int = _MODEL.encoder_heads,
        normalize_adapted: bool = _MODEL.normalize_adapted,
    ) -> None:
        super().__init__()
        self.n_layers, self.in_dim, self.sequence = n_layers, in_dim, sequence
        self.adapters = LayerAdapters(n_layers, in_dim, width, activation=activation, dropout=dropout,
                                      normalize_adapted=normalize_adapted)
        self.weighting = LayerWeighting(n_layers)
        self.encoder = None
        if sequence and encoder_layers > 0:
            layer = nn.TransformerEncoderLayer(width, encoder_heads, dim_feedforward=2 * width, dropout=dropout,
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, encoder_layers, enable_nested_tensor=False)
        act = _ACTIVATIONS[activation]
        dims = (width, *head_hidden)
        blocks: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            blocks += [nn.Linear(a, b), act(), nn.Dropout(dropout)]
        blocks.append(nn.Linear(dims[-1], n_classes))
        self.head = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Classify a batch.

        Parameters
        ----------
        x : (n_layers, B, in_dim) pooled features, or (n_layers, B, T, in_dim) frame sequences.
        mask : (B, T) bool, True = valid frame; required for sequences.

        Returns
        -------
        logits : (B, n_classes)
        adapted : (n_layers, B, width) adapted features per layer, pooled over valid frames for
            sequences: the representation CORAL aligns.
        """
        a = self.adapters(x)
        if x.ndim == 3:
            return self.head(self.weighting(a)), a
        if mask is None:
            raise ValueError("frame-sequence input needs a (B, T) validity mask")
        fused = self.weighting(a)  # (B, T, width)
        if self.encoder is not None:
            fused = self.encoder(fused, src_key_padding_mask=~mask)
        return self.head(masked_mean(fused, mask)), masked_mean(a, mask)
