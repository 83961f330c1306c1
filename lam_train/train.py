"""The training loop: cross-entropy on the source plus CORAL towards the target at anchored layers.

    loss = CE(source batch) + lambda * sum_{l in anchored} CORAL(adapted_l(source batch), adapted_l(target batch))

(on the upstream layers themselves when the speech model's top layers are fine-tuned). Adam;
seeds for torch, numpy and ``random``; early stopping on source-dev UAR (target-dev selection is a
flagged ``oracle_target_dev`` option, recorded in the metrics); a checkpoint after every epoch in
safetensors (weights, Adam state, best weights, standardiser) with JSON metadata (resolved
config, history, RNG states), so that a killed run resumes to exactly the result of an
uninterrupted one. No pickle: RNG states are tensors or JSON, never ``torch.save`` objects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from analysis.models import resolve_device
from phonalign.fsutil import atomic_path, atomic_write_json
from phonalign.progress import progress_bar
from phonalign.provenance import write_run_info

from .config import RunConfig, Strategy, config_to_dict, parse_strategy
from .coral import coral_loss, coral_relative
from .data import Domain, Standardizer, class_weights, epoch_order
from .errors import TrainError
from .evaluate import scores, uar_fast
from .model import EmotionClassifier, masked_mean

CHECKPOINT = "checkpoint.safetensors"  # last completed epoch: for resuming
MODEL = "model.safetensors"            # selected (best) weights + resolved config + metrics
METRICS = "metrics.json"               # written last: its presence means "run complete"
FORMAT = 1


# ---------------------------------------------------------------------------------------------
# devices, seeds


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (CPU and CUDA), numpy's global state and ``random``; return the run's numpy
    generator (batch order, target batches)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return np.random.default_rng(seed)


def strategy_layers(strategy: Strategy, *, n_layers: int, selections: dict | None,
                    stored: Sequence[int] | None = None) -> list[int]:
    """Layers (0..L) a strategy uses: ``final`` -> [L]; ``all`` -> every stored layer; else the selection.

    ``stored`` are the layers the feature store holds (default all of 0..L); a strategy that
    needs another layer is refused, naming the layers there are.
    """
    held = list(range(n_layers + 1)) if stored is None else sorted(int(x) for x in stored)
    if strategy.selection == "final":
        layers = [n_layers]
    elif strategy.selection == "all":
        return held
    else:
        if not selections or strategy.selection not in selections:
            raise TrainError(
                f"strategy {strategy.name!r} needs the layer selection {strategy.selection!r} from a rankings file",
                hint="set `rankings:` in the config (written by `lam similarity`) or use final / all",
            )
        layers = sorted(int(x) for x in selections[strategy.selection])
        bad = [x for x in layers if not 0 <= x <= n_layers]
        if bad or not layers:
            raise TrainError(f"selection {strategy.selection!r} has layers {layers} outside 0..{n_layers}")
    absent = [x for x in layers if x not in held]
    if absent:
        from analysis.store import describe_layers

        raise TrainError(
            f"strategy {strategy.name!r} needs layer{'s' if len(absent) > 1 else ''} "
            f"{', '.join(map(str, absent))}, which the feature store does not hold (it holds {describe_layers(held)})",
            hint="extract the features again with `lam features --layers` including them, or drop the strategy",
        )
    return layers


# ---------------------------------------------------------------------------------------------
# featurisers: turn rows of a domain into the model's input


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


# ---------------------------------------------------------------------------------------------
# the fit loop


#: Settings that do not change a run's numbers: a checkpoint may be resumed with other values.
_NO_EFFECT: dict[str, tuple[str, ...] | None] = {"output": None,
                                                  "train": ("progress", "checkpoint_every", "cpu_threads")}


def _result_config(cfg: dict | None) -> dict | None:
    if cfg is None:
        return None
    out = {k: v for k, v in cfg.items() if k != "output"}
    out["train"] = {k: v for k, v in (cfg.get("train") or {}).items() if k not in (_NO_EFFECT["train"] or ())}
    return out


@dataclass
class FitResult:
    """What a finished run gives back (also written to ``metrics.json``)."""

    best_epoch: int
    epochs_run: int
    best_score: float
    history: list[dict] = field(default_factory=list)
    resumed_from: int | None = None


def _autocast(device: torch.device, cfg: RunConfig):
    if device.type == "cuda" and cfg.train.amp:
        return torch.autocast("cuda", dtype=getattr(torch, cfg.train.amp_dtype))
    return contextlib.nullcontext()


def predict(model: EmotionClassifier, featurizer, domain: Domain, device: torch.device, *,
            batch_size: int = 256, with_features: bool = False):
    """Predicted classes (n,) int64, and optionally adapted features (n_layers, n, width) float32
    and upstream pooled features (n_layers, n, hidden) float32, in eval mode."""
    model.eval()
    featurizer.train(False)
    preds, feats, ups = [], [], []
    with torch.inference_mode():
        for start in range(0, domain.n, batch_size):
            idx = np.arange(start, min(start + batch_size, domain.n))
            x, mask, up = featurizer(domain, idx, device)
            logits, adapted = model(x, mask)
            preds.append(logits.argmax(-1).cpu())
            if with_features:
                feats.append(adapted.float().cpu())
                ups.append((up if up is not None else x).float().cpu())
    y = torch.cat(preds).numpy()
    if not with_features:
        return y
    return y, torch.cat(feats, dim=1), torch.cat(ups, dim=1)


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


@contextlib.contextmanager
def cpu_threads(cfg: RunConfig, device: torch.device):
    """Torch's intra-op threads for this run, restored afterwards.

    The pooled-input classifier does matrix products of a few dozen rows: extra OpenMP threads
    only add synchronisation, and on a loaded machine they spin-wait (measured on the demo, 2
    cores under load: 2.7 s with 1 thread, 34 s with 2). ``auto`` (0) therefore uses 1 thread for
    pooled input and leaves frame mode (a speech model's forward pass) at torch's default.
    """
    n = cfg.train.cpu_threads or (1 if cfg.data.input == "pooled" else 0)
    if device.type != "cpu" or n == 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(
    cfg: RunConfig,
    *,
    model: EmotionClassifier,
    featurizer,
    source_train: Domain,
    source_dev: Domain,
    target_train: Domain | None,
    coral: bool,
    seed: int,
    out_dir: Path,
    oracle_dev: Domain | None = None,
    run_meta: dict | None = None,
) -> FitResult:
    """Train ``model`` in place; leave it holding the selected (best) weights.

    Parameters
    ----------
    source_train, source_dev : labelled source domains.
    target_train : unlabelled target domain (``y`` must be None): CORAL's other side.
    coral : add the CORAL term (lambda = ``cfg.train.lambda_coral``).
    oracle_dev : labelled target dev, used for model selection only when
        ``cfg.train.selection == 'oracle_target_dev'``.

    Resumes from ``out_dir/checkpoint.safetensors`` when it exists and matches this run.
    """
    t = cfg.train
    if target_train is not None and target_train.labelled:
        raise TrainError("internal: the target training domain carries labels; build it with unlabelled_domain()")
    if coral and (target_train is None or target_train.n < 2):
        raise TrainError("CORAL needs at least 2 unlabelled target training utterances")
    if not source_train.labelled or not source_dev.labelled:
        raise TrainError("internal: source domains must be labelled")
    selection_domain = source_dev
    if t.selection == "oracle_target_dev":
        if oracle_dev is None:
            raise TrainError("train.selection: oracle_target_dev needs a labelled target dev split")
        selection_domain = oracle_dev
    device = resolve_device(t.device)
    rng = seed_everything(seed)
    model.to(device)
    params = list(model.parameters()) + list(featurizer.parameters())
    opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    y_src = source_train.labels.numpy()
    weight = class_weights(source_train.labels) if t.balance == "class_weight" else None
    ce = torch.nn.CrossEntropyLoss(weight=None if weight is None else weight.to(device))
    bs = min(t.batch_size, source_train.n)
    # CORAL's other side (checked above to be there when coral is on)
    coral_target = target_train if coral else None
    tbs = min(t.batch_size, coral_target.n) if coral_target is not None else 0
    lam = float(t.lambda_coral) if coral else 0.0
    # float16 autocast needs loss scaling (bfloat16, the default, has float32's range and does not)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and t.amp and t.amp_dtype == "float16")

    ckpt = out_dir / CHECKPOINT
    meta = dict(run_meta or {})
    start_epoch, best_epoch, best_score, bad, history, resumed = 0, -1, -1.0, 0, [], None
    best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    if ckpt.is_file():
        try:
            info = read_metadata(ckpt)
            tensors = load_file(str(ckpt))
        except Exception as err:  # safetensors' own error type for a truncated or foreign file
            raise TrainError(f"the checkpoint cannot be read ({str(err).splitlines()[0][:200]})", path=ckpt,
                             hint="it is damaged (a full disk or a copy cut short): delete it and rerun; the run "
                             "then starts again from its first epoch") from None
        if info.get("run") != json.loads(json.dumps(meta.get("run"))) or _result_config(info.get("config")) != \
                _result_config(json.loads(json.dumps(meta.get("config")))):
            raise TrainError("a checkpoint of a different run is in the output folder", path=ckpt,
                             hint="use a new output folder, or delete the folder to start again")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        featurizer.load_state({k[5:]: v for k, v in tensors.items() if k.startswith("feat.")})
        model.to(device)
        _unflatten_optimizer(opt, tensors, info["param_groups"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        _restore_rng(rng, info["rng"] if isinstance(info["rng"], str) else json.dumps(info["rng"]))
        st = info["state"]
        start_epoch, best_epoch, best_score, bad, history = (st["epoch"] + 1, st["best_epoch"], st["best_score"],
                                                             st["bad_epochs"], st["history"])
        resumed = st["epoch"]
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])

    # epochs are an inner loop: without a terminal, their plain lines are DEBUG (the pipeline says
    # one line per run)
    bar = progress_bar(t.epochs, desc=f"{meta.get('run', {}).get('strategy', 'train')} seed {seed}",
                       item="epoch", progress=t.progress, log_level=logging.DEBUG)
    bar.update(start_epoch)
    for epoch in range(start_epoch, t.epochs):
        if bad >= t.patience:
            break
        model.train()
        featurizer.train(True)
        order = epoch_order(y_src, source_train.n, rng, balanced=t.balance == "sampler")
        n_batches = max(1, len(order) // bs)  # drop the short last batch: CORAL needs full batches
        sums = np.zeros(3)
        t0 = time.perf_counter()
        for b in range(n_batches):
            idx = order[b * bs:(b + 1) * bs]
            ys = source_train.labels[torch.from_numpy(idx)].to(device)
            with _autocast(device, cfg):
                # both domains' features inside the autocast region: in frame mode the speech model
                # runs here, and CORAL on upstream layers must compare features of one precision
                xs, ms, us = featurizer(source_train, idx, device)
                if coral_target is not None:
                    tidx = rng.choice(coral_target.n, size=tbs, replace=False)
                    xt, mt, ut = featurizer(coral_target, tidx, device)
                    if ms is None:  # pooled: one forward for both domains
                        logits, adapted = model(torch.cat([xs, xt], dim=1))
                        a_s, a_t, logits = adapted[:, :bs], adapted[:, bs:], logits[:bs]
                    else:
                        logits, a_s = model(xs, ms)
                        _, a_t = model(xt, mt)
                    if featurizer.sequence and getattr(featurizer, "finetune_top", 0) > 0:
                        a_s, a_t = us, ut  # fine-tuning: anchor the upstream layers themselves
                    loss_coral = coral_loss(a_s, a_t).sum()
                else:
                    logits, _ = model(xs, ms)
                    loss_coral = torch.zeros((), device=device)
                loss_ce = ce(logits.float(), ys)
                loss = loss_ce + lam * loss_coral
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sums += (loss.item(), loss_ce.item(), loss_coral.item())
        if not np.isfinite(sums).all():
            # inputs are checked finite when read: a non-finite loss is a numerical failure (a
            # learning rate too high, float16 overflow) and the weights are no longer meaningful
            raise TrainError(f"the training loss became NaN or infinite in epoch {epoch} "
                             f"(loss {sums[0] / n_batches}, CORAL {sums[2] / n_batches})", path=out_dir,
                             hint="lower train.lr or train.lambda_coral, or use float32 (train.amp: false); "
                             "the last good checkpoint is kept and a rerun resumes from it")
        pred = predict(model, featurizer, selection_domain, device, batch_size=max(256, bs))
        score = uar_fast(selection_domain.labels.numpy(), pred)
        row = {"epoch": epoch, "loss": float(sums[0] / n_batches), "ce": float(sums[1] / n_batches),
               "coral": float(sums[2] / n_batches), "dev_uar": score, "seconds": time.perf_counter() - t0}
        history.append(row)
        if score >= best_score:  # ties keep the later epoch: it has trained longer on both terms
            best_epoch, best_score, bad = epoch, score, 0
            best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
        else:
            bad += 1
        bar.set_postfix(loss=f"{row['loss']:.3f}", dev_uar=f"{score:.3f}")
        bar.update(1)
        meta["state"] = {"epoch": epoch, "best_epoch": best_epoch, "best_score": best_score, "bad_epochs": bad,
                         "history": history, "scaler": scaler.state_dict() if scaler.is_enabled() else None}
        if (epoch + 1) % t.checkpoint_every == 0 or epoch + 1 == t.epochs or bad >= t.patience:
            save_checkpoint(ckpt, model=model, featurizer=featurizer, opt=opt, best_state=best_state, rng=rng,
                            meta=meta)
    bar.close()
    model.load_state_dict(best_state)
    model.to(device)
    return FitResult(best_epoch=best_epoch, epochs_run=len(history), best_score=best_score, history=history,
                     resumed_from=resumed)


def save_model(path: Path, model: EmotionClassifier, featurizer, *, config: dict, run: dict, metrics: dict) -> None:
    """The selected weights (+ standardiser) with the resolved config and metrics as metadata."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"feat.{k}": v.detach().cpu().contiguous() for k, v in featurizer.state().items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": str(FORMAT), "config": json.dumps(config),
                                               "run": json.dumps(run), "metrics": json.dumps(metrics)})


def representation_coral(adapted_source: torch.Tensor, adapted_target: torch.Tensor) -> list[float]:
    """CORAL distance per layer between two domains' representations ``(n_layers, n, d)``."""
    return [float(v) for v in coral_loss(adapted_source.double(), adapted_target.double())]


# ---------------------------------------------------------------------------------------------
# one run: data -> model -> fit -> evaluation -> files


class CachedFeatures:
    """Memoise layers of a feature table: a pipeline trains many runs on the same layers.

    Only the utterance rows are kept (training reads nothing else): a store with phone segments
    holds some 60 rows per utterance, and caching whole layers of a corpus-scale store would need
    tens of GB per layer (docs/scale.md).
    """

    def __init__(self, features):
        self._f = features
        self.index = features.index
        self.meta = getattr(features, "meta", {})
        self.layer_names = getattr(features, "layer_names", None)
        self.path = getattr(features, "path", None)
        self._cache: dict[int, np.ndarray] = {}
        if "kind" in self.index.column_names:
            kind = self.index.column("kind").to_numpy(zero_copy_only=False)
            self._rows = np.flatnonzero(kind == "utt").astype(np.int64)
        else:
            self._rows = np.arange(self.index.num_rows, dtype=np.int64)
        self._pos = np.full(self.index.num_rows, -1, np.int64)  # store row -> cache row
        self._pos[self._rows] = np.arange(self._rows.size)

    def read_layer(self, layer: int, *, rows: np.ndarray | None = None) -> np.ndarray:
        """Vectors of one layer, (n_rows, hidden) float32; the utterance rows are read from the store once."""
        if rows is None:
            return np.asarray(self._f.read_layer(int(layer)), dtype=np.float32)
        pos = self._pos[np.asarray(rows, dtype=np.int64)]
        if (pos < 0).any():  # rows that are not utterances: straight from the store
            return np.asarray(self._f.read_layer(int(layer), rows=rows), dtype=np.float32)
        if int(layer) not in self._cache:
            self._cache[int(layer)] = np.asarray(self._f.read_layer(int(layer), rows=self._rows), dtype=np.float32)
        return self._cache[int(layer)][pos]


@dataclass
class RunData:
    """The domains of one run. ``target_test``/``source_test`` are for evaluation only."""

    source_train: Domain
    source_dev: Domain
    target_train: Domain
    source_test: Domain | None
    target_test: Domain | None
    oracle_dev: Domain | None
    in_dim: int


def _maybe(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except TrainError:
        return None


def build_run_data(cfg: RunConfig, *, layers: Sequence[int], source, target) -> RunData:
    """Pooled-mode domains from two feature tables (which may be the same object)."""
    from .data import labelled_domain, unlabelled_domain

    d = cfg.data
    src, tgt = d.source_language, d.target_language
    st = labelled_domain(source, layers=layers, language=src, split=d.train_split, what="source train")
    sd = labelled_domain(source, layers=layers, language=src, split=d.dev_split, what="source dev")
    tt = unlabelled_domain(target, layers=layers, language=tgt, split=d.train_split,
                           what="target train (unlabelled)")
    s_test = _maybe(labelled_domain, source, layers=layers, language=src, split=d.test_split, what="source test")
    t_test = _maybe(labelled_domain, target, layers=layers, language=tgt, split=d.test_split, what="target test")
    oracle = None
    if cfg.train.selection == "oracle_target_dev":
        oracle = labelled_domain(target, layers=layers, language=tgt, split=d.dev_split,
                                 what="target dev (oracle selection)")
    return RunData(st, sd, tt, s_test, t_test, oracle, in_dim=int(st.features.shape[-1]))


def build_frame_data(cfg: RunConfig) -> RunData:
    """Frame-mode domains: waveforms of the aligned corpora; target train without labels."""
    from .data import audio_domain, read_utterances

    d = cfg.data
    if not d.source_aligned or not d.target_aligned:
        raise TrainError("data.input: frames needs data.source_aligned and data.target_aligned "
                         "(folders written by `lam align`)")
    src = read_utterances(d.source_aligned, drop_labels=False)
    tgt_unlabelled = read_utterances(d.target_aligned, drop_labels=True)
    secs = d.max_seconds
    st = audio_domain(src, language=d.source_language, split=d.train_split, labelled=True, what="source train",
                      max_seconds=secs)
    sd = audio_domain(src, language=d.source_language, split=d.dev_split, labelled=True, what="source dev",
                      max_seconds=secs)
    tt = audio_domain(tgt_unlabelled, language=d.target_language, split=d.train_split, labelled=False,
                      what="target train (unlabelled)", max_seconds=secs)
    s_test = _maybe(audio_domain, src, language=d.source_language, split=d.test_split, labelled=True,
                    max_seconds=secs)
    tgt = read_utterances(d.target_aligned, drop_labels=False)  # evaluation only, after fit
    t_test = _maybe(audio_domain, tgt, language=d.target_language, split=d.test_split, labelled=True,
                    max_seconds=secs)
    oracle = None
    if cfg.train.selection == "oracle_target_dev":
        oracle = audio_domain(tgt, language=d.target_language, split=d.dev_split, labelled=True, max_seconds=secs)
    return RunData(st, sd, tt, s_test, t_test, oracle, in_dim=0)


def run_training(
    cfg: RunConfig,
    *,
    strategy: str,
    seed: int,
    out_dir: str | Path,
    source=None,
    target=None,
    selections: dict | None = None,
    lambda_coral: float | None = None,
) -> dict:
    """Train and evaluate one (strategy, seed); write ``model.safetensors`` and ``metrics.json``.

    Parameters
    ----------
    cfg : resolved run config.
    strategy : a name accepted by :func:`~lam_train.config.parse_strategy`.
    source, target : feature tables (pooled mode); default: open ``cfg.data.*_store``.
    selections : the rankings' layer selections (``final, BL, GL, WL, RL1..RL3``).
    lambda_coral : override of ``cfg.train.lambda_coral`` for this run.

    Returns
    -------
    dict : the metrics (also in ``out_dir/metrics.json``). A run whose ``metrics.json`` exists is
    not trained again; a run with a checkpoint resumes from it.
    """
    from .data import check_same_model, n_model_layers, open_features, stored_layers

    out_dir = Path(out_dir)
    done = out_dir / METRICS
    if done.is_file():
        from phonalign.fsutil import read_json

        return read_json(done, what="metrics of a finished run",
                         hint=f"delete {METRICS} (and {MODEL}) in that folder to train the run again")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_run_info(out_dir, step="train", config=cfg, seed=seed)
    strat = parse_strategy(strategy)
    if lambda_coral is not None:
        cfg = cfg.replace(train=__import__("dataclasses").replace(cfg.train, lambda_coral=float(lambda_coral)))
    lam = cfg.train.lambda_coral if strat.coral else 0.0
    use_coral = strat.coral and lam > 0
    m = cfg.model
    if cfg.data.input == "pooled":
        if source is None:
            if not cfg.data.source_store:
                raise TrainError("data.source_store is not set", hint="point it at a feature store from `lam features`")
            source = open_features(cfg.data.source_store)
        if target is None:
            target = source if not cfg.data.target_store else open_features(cfg.data.target_store)
        check_same_model(source, target)
        n_layers = n_model_layers(source)
        held = sorted(set(stored_layers(source)) & set(stored_layers(target)))
        layers = strategy_layers(strat, n_layers=n_layers, selections=selections, stored=held)
        data = build_run_data(cfg, layers=layers, source=source, target=target)
        std = Standardizer.fit(data.source_train.features) if cfg.data.standardize else Standardizer.identity(
            len(layers), data.in_dim)
        featurizer: PooledFeaturizer | FrameFeaturizer = PooledFeaturizer(std)
        in_dim = data.in_dim
    else:
        from analysis.models import load_encoder

        if not cfg.data.encoder:
            raise TrainError("data.input: frames needs data.encoder (a model id or folder)")
        encoder = load_encoder(cfg.data.encoder, device=str(resolve_device(cfg.train.device)),
                               whisper_mode=cfg.features.whisper_mode)
        n_layers = int(encoder.n_layers)
        layers = strategy_layers(strat, n_layers=n_layers, selections=selections)
        data = build_frame_data(cfg)
        featurizer = FrameFeaturizer(encoder, layers, finetune_top=cfg.data.finetune_top)
        in_dim = int(encoder.hidden_size)
    seed_everything(seed)  # model initialisation depends on the seed only
    model = EmotionClassifier(n_layers=len(layers), in_dim=in_dim, width=m.width, head_hidden=m.head_hidden,
                              dropout=m.dropout, activation=m.activation, sequence=featurizer.sequence,
                              encoder_layers=m.encoder_layers, encoder_heads=m.encoder_heads,
                              normalize_adapted=m.normalize_adapted)
    run = {"strategy": strat.name, "selection": strat.selection, "coral": use_coral, "lambda": lam,
           "seed": seed, "layers": layers, "n_model_layers": n_layers}
    cfg_plain = config_to_dict(cfg)
    device = resolve_device(cfg.train.device)
    with cpu_threads(cfg, device):
        return _fit_and_evaluate(cfg, cfg_plain, run, model=model, featurizer=featurizer, data=data, seed=seed,
                                 out_dir=out_dir, use_coral=use_coral, device=device)


def _fit_and_evaluate(cfg: RunConfig, cfg_plain: dict, run: dict, *, model: EmotionClassifier,
                      featurizer: PooledFeaturizer | FrameFeaturizer, data: RunData, seed: int, out_dir: Path,
                      use_coral: bool, device: torch.device) -> dict:
    layers = run["layers"]
    done = out_dir / METRICS
    result = fit(cfg, model=model, featurizer=featurizer, source_train=data.source_train,
                 source_dev=data.source_dev, target_train=data.target_train if use_coral else None,
                 coral=use_coral, seed=seed, out_dir=out_dir, oracle_dev=data.oracle_dev,
                 run_meta={"run": run, "config": cfg_plain})
    metrics = {**run, "selection_on": cfg.train.selection, "oracle": cfg.train.selection == "oracle_target_dev",
               "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
               "selection_uar": result.best_score, "resumed_from": result.resumed_from,
               "history": result.history,
               "layer_weights": [float(w) for w in model.weighting.weights.cpu()],
               "source_train_n": data.source_train.n, "target_train_n": data.target_train.n}
    pred_dev = predict(model, featurizer, data.source_dev, device)
    metrics["source_dev"] = scores(data.source_dev.labels.numpy(), pred_dev)
    if data.target_test is not None:
        y_t, feat_t, up_t = predict(model, featurizer, data.target_test, device, with_features=True)
        metrics["target_test"] = scores(data.target_test.labels.numpy(), y_t)
        ref = data.source_test if data.source_test is not None else data.source_dev
        _, feat_s, up_s = predict(model, featurizer, ref, device, with_features=True)
        metrics["coral_distance"] = {
            "between": f"source {'test' if data.source_test is not None else 'dev'} and target test",
            "layers": layers,
            "adapted": representation_coral(feat_s, feat_t),
            "adapted_relative": [float(v) for v in coral_relative(feat_s.double(), feat_t.double())],
            "input": representation_coral(up_s, up_t),
        }
    else:
        metrics["target_test"] = None
        metrics["note"] = "the target test split has no emotion labels: no target score"
    save_model(out_dir / MODEL, model, featurizer, config=cfg_plain, run=run, metrics=
               {k: v for k, v in metrics.items() if k != "history"})
    atomic_write_json(done, metrics)
    ckpt = out_dir / CHECKPOINT
    if ckpt.exists():  # the run is complete: its resume state is no longer needed
        ckpt.unlink()
    return metrics
