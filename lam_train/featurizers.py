"""Featurisers: turn rows of a :class:`~lam_train.data.Domain` into the classifier's input.

:class:`PooledFeaturizer` standardises pooled vectors read from a feature store (no parameters);
:class:`FrameFeaturizer` runs a speech model on waveforms and returns its anchored layers' frames
(with the top transformer layers trainable when fine-tuning). Both save and restore their state as
tensors (:meth:`state`, :meth:`load_state`) for checkpoints and model files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .data import Domain, Standardizer
from .errors import TrainError
from .model import masked_mean

__all__ = ["PooledFeaturizer", "FrameFeaturizer"]


class PooledFeaturizer:
    """Pooled features: slice rows, z-score with source-train statistics. No parameters."""

    sequence = False

    def __init__(self, standardizer: Standardizer):
        self.standardizer = standardizer

    def parameters(self):
        """Trainable parameters of the featuriser (none when pooled or frozen)."""
        return iter(())

    def __call__(self, domain: Domain, idx: np.ndarray, device: torch.device):
        x = domain.features[:, torch.from_numpy(np.asarray(idx))].to(device, non_blocking=True)
        return self.standardizer(x), None, None

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to save in checkpoints and model files."""
        return {"norm.mean": self.standardizer.mean, "norm.std": self.standardizer.std}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state` saved."""
        self.standardizer = Standardizer(mean=tensors["norm.mean"], std=tensors["norm.std"])

    def train(self, mode: bool = True) -> None:
        """Switch between training and evaluation behaviour (as ``nn.Module.train``)."""
        pass


class FrameFeaturizer:
    """Frame sequences on the fly: waveforms -> speech model -> anchored layers (+ mask).

    ``encoder`` is an :class:`analysis.models.SpeechEncoder`. It is frozen (its ``forward``
    runs under ``inference_mode``), or its top ``finetune_top`` transformer layers are trained
    (``forward(..., grad=True)`` keeps the graph). Each layer's frames are
    layer-normalised (no parameters) so the adapters see a common scale. Also returns the
    anchored upstream layers pooled over valid frames: with fine-tuning, CORAL aligns those.
    """

    sequence = True

    def __init__(self, encoder, layers: Sequence[int], *, finetune_top: int = 0):
        self.encoder = encoder
        self.layers = list(layers)
        self.finetune_top = finetune_top
        for p in encoder.model.parameters():
            p.requires_grad_(False)
        self._trainable: dict[str, torch.nn.Parameter] = {}
        if finetune_top > 0:
            blocks = _transformer_blocks(encoder.model, int(encoder.n_layers))
            if finetune_top > len(blocks):
                raise TrainError(f"data.finetune_top={finetune_top} but the model has {len(blocks)} layers")
            for i, block in enumerate(blocks[-finetune_top:]):
                for name, p in block.named_parameters():
                    p.requires_grad_(True)
                    self._trainable[f"upstream.{len(blocks) - finetune_top + i}.{name}"] = p

    def parameters(self):
        """Trainable parameters of the featuriser (none when pooled or frozen)."""
        return iter(self._trainable.values())

    def train(self, mode: bool = True) -> None:
        """Switch between training and evaluation behaviour (as ``nn.Module.train``)."""
        # The upstream stays in eval mode even when fine-tuned: LayerDrop would remove layers
        # (and anchored hidden states) at random, and its dropout is tuned for pre-training.
        self.encoder.model.eval()

    def __call__(self, domain: Domain, idx: np.ndarray, device: torch.device):
        waves = [domain.audio[i] for i in idx]
        grad = self.finetune_top > 0 and torch.is_grad_enabled()
        hidden, valid_np = self.encoder(waves, grad=grad)
        valid = torch.from_numpy(np.asarray(valid_np)).to(device)
        x = hidden[self.layers].to(device)  # (n_sel, B, T, H)
        x = torch.nn.functional.layer_norm(x, x.shape[-1:])
        mask = torch.arange(x.shape[2], device=device)[None, :] < valid[:, None]
        return x, mask, masked_mean(x, mask)

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to save in checkpoints and model files."""
        return {k: v.detach() for k, v in self._trainable.items()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state` saved."""
        with torch.no_grad():
            for k, p in self._trainable.items():
                p.copy_(tensors[k])


def _transformer_blocks(model: torch.nn.Module, n_layers: int) -> torch.nn.ModuleList:
    """The model's list of ``n_layers`` transformer layers (a ``ModuleList`` named ``...layers``)."""
    found = [m for name, m in model.named_modules()
             if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers and name.split(".")[-1] == "layers"]
    if not found:
        raise TrainError("cannot find the transformer layers of this speech model to fine-tune",
                         hint="set data.finetune_top: 0")
    return found[-1]
