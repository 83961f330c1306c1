"""Checkpoints and model files in safetensors: tensors, with JSON metadata; never pickle.

A checkpoint (:data:`CHECKPOINT`, written after each epoch) holds the weights, the best weights so
far, the featuriser's state, Adam's state and the RNG states (torch as tensors; numpy and
``random`` as JSON), so that a killed run resumes to exactly the result of an uninterrupted one.
A model file (:data:`MODEL`) holds the selected weights and the featuriser's state, with the
resolved config, the run and its metrics as metadata.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from phonalign.fsutil import atomic_path

from .errors import TrainError

__all__ = ["CHECKPOINT", "MODEL", "METRICS", "FORMAT", "save_checkpoint", "read_checkpoint", "restore_checkpoint",
           "read_metadata", "save_model"]

CHECKPOINT = "checkpoint.safetensors"  # last completed epoch: for resuming
MODEL = "model.safetensors"            # selected (best) weights + resolved config + metrics
METRICS = "metrics.json"               # written last: its presence means "run complete"
FORMAT = 1


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, json.dumps(sd["param_groups"])


def _unflatten_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(groups) if isinstance(groups, str) else groups})


def _rng_json(rng: np.random.Generator) -> str:
    return json.dumps({"numpy": rng.bit_generator.state, "random": random.getstate(),
                       "numpy_global": [x.tolist() if hasattr(x, "tolist") else x for x in np.random.get_state()]})


def _restore_rng(rng: np.random.Generator, text: str) -> None:
    st = json.loads(text)
    rng.bit_generator.state = st["numpy"]
    v, internal, gauss = st["random"]
    random.setstate((v, tuple(internal), gauss))
    g = st["numpy_global"]
    np.random.set_state((g[0], np.asarray(g[1], dtype=np.uint32), g[2], g[3], g[4]))


def save_checkpoint(path: Path, *, model, featurizer, opt, best_state, rng, meta: dict) -> None:
    """Atomic safetensors checkpoint: weights, best weights, Adam state, torch RNG; JSON metadata."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.cpu().contiguous() for k, v in best_state.items()})
    tensors.update({f"feat.{k}": v.detach().cpu().contiguous() for k, v in featurizer.state().items()})
    opt_tensors, groups = _flatten_optimizer(opt)
    tensors.update({k: v.cpu().contiguous() for k, v in opt_tensors.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    metadata = {"format": str(FORMAT), "param_groups": groups, "rng": _rng_json(rng),
                **{k: json.dumps(v) for k, v in meta.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_metadata(path: str | Path) -> dict:
    """JSON metadata of a checkpoint or model file (config, run, metrics ...), decoded."""
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A checkpoint's decoded metadata and its tensors.

    Raises
    ------
    TrainError
        The file cannot be read (truncated by a full disk, cut short in a copy, not a checkpoint).
    """
    try:
        return read_metadata(path), load_file(str(path))
    except Exception as err:  # safetensors' own error type for a truncated or foreign file
        raise TrainError(f"the checkpoint cannot be read ({str(err).splitlines()[0][:200]})", path=path,
                         hint="it is damaged (a full disk or a copy cut short): delete it and rerun; the run "
                         "then starts again from its first epoch") from None


def restore_checkpoint(info: dict[str, Any], tensors: dict[str, torch.Tensor], *, model: torch.nn.Module,
                       featurizer, opt: torch.optim.Optimizer, rng: np.random.Generator,
                       device: torch.device) -> dict[str, torch.Tensor]:
    """Put what :func:`save_checkpoint` saved back into the model, featuriser, optimiser and RNGs
    (torch, CUDA, numpy's global state, ``random`` and ``rng``); return the best weights so far."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    featurizer.load_state({k[5:]: v for k, v in tensors.items() if k.startswith("feat.")})
    model.to(device)
    _unflatten_optimizer(opt, tensors, info["param_groups"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    _restore_rng(rng, info["rng"] if isinstance(info["rng"], str) else json.dumps(info["rng"]))
    return best_state


def save_model(path: Path, model: torch.nn.Module, featurizer, *, config: dict, run: dict, metrics: dict) -> None:
    """The selected weights (+ standardiser) with the resolved config and metrics as metadata."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"feat.{k}": v.detach().cpu().contiguous() for k, v in featurizer.state().items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": str(FORMAT), "config": json.dumps(config),
                                               "run": json.dumps(run), "metrics": json.dumps(metrics)})

