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

from analysis.models import resolve_device
from phonalign.fsutil import atomic_write_json
from phonalign.progress import progress_bar
from phonalign.provenance import write_run_info

from .checkpoint import (
    CHECKPOINT,
    METRICS,
    MODEL,
    read_checkpoint,
    read_metadata,
    restore_checkpoint,
    save_checkpoint,
    save_model,
)
from .config import RunConfig, Strategy, config_to_dict, parse_strategy
from .coral import coral_loss, coral_relative
from .data import Domain, Standardizer, class_weights, epoch_order
from .errors import TrainError
from .evaluate import scores, uar_fast
from .featurizers import FrameFeaturizer, PooledFeaturizer
from .model import EmotionClassifier
from .results import CoralDistance, EpochRow, FitResult, RunMetrics, Scores

#: Public names, with those that live in :mod:`lam_train.checkpoint` and :mod:`lam_train.featurizers`
#: since the file was split (importable from here as before).
__all__ = ["run_training", "fit", "predict", "strategy_layers", "seed_everything", "cpu_threads", "CachedFeatures",
           "RunData", "build_run_data", "build_frame_data", "representation_coral", "FitResult", "CHECKPOINT",
           "MODEL", "METRICS", "save_checkpoint", "read_metadata", "save_model", "PooledFeaturizer",
           "FrameFeaturizer"]


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


@dataclass
class _Loop:
    """What the epochs of one fit share: settings resolved once, the optimiser, the RNG.

    ``coral_target`` is CORAL's other side (None without CORAL); ``tbs`` its batch size.
    """

    device: torch.device
    rng: np.random.Generator
    opt: torch.optim.Optimizer
    ce: torch.nn.CrossEntropyLoss
    scaler: torch.amp.GradScaler
    bs: int
    tbs: int
    lam: float
    coral_target: Domain | None
    selection_domain: Domain


@dataclass
class _Progress:
    """The fit's state after each epoch: what a checkpoint saves and a resumed run starts from."""

    best_state: dict[str, torch.Tensor]
    start_epoch: int = 0
    best_epoch: int = -1
    best_score: float = -1.0
    bad: int = 0  # epochs since the best one (early stopping)
    history: list[dict] = field(default_factory=list)
    resumed: int | None = None

    def to_meta(self, epoch: int, scaler: torch.amp.GradScaler) -> dict:
        """The checkpoint's ``state`` after ``epoch``."""
        return {"epoch": epoch, "best_epoch": self.best_epoch, "best_score": self.best_score, "bad_epochs": self.bad,
                "history": self.history, "scaler": scaler.state_dict() if scaler.is_enabled() else None}


def _selection_domain(cfg: RunConfig, *, source_train: Domain, source_dev: Domain, target_train: Domain | None,
                      coral: bool, oracle_dev: Domain | None) -> Domain:
    """Check the domains :func:`fit` is given; return the one that selects the best epoch."""
    if target_train is not None and target_train.labelled:
        raise TrainError("internal: the target training domain carries labels; build it with unlabelled_domain()")
    if coral and (target_train is None or target_train.n < 2):
        raise TrainError("CORAL needs at least 2 unlabelled target training utterances")
    if not source_train.labelled or not source_dev.labelled:
        raise TrainError("internal: source domains must be labelled")
    if cfg.train.selection == "oracle_target_dev":
        if oracle_dev is None:
            raise TrainError("train.selection: oracle_target_dev needs a labelled target dev split")
        return oracle_dev
    return source_dev


def _prepare(cfg: RunConfig, *, model: EmotionClassifier, featurizer, source_train: Domain,
             target_train: Domain | None, coral: bool, seed: int, selection_domain: Domain) -> _Loop:
    """Seed, move the model to its device, build Adam, the loss and the loss scaler (in this order:
    the order fixes the random draws, and so the figures)."""
    t = cfg.train
    device = resolve_device(t.device)
    rng = seed_everything(seed)
    model.to(device)
    params = list(model.parameters()) + list(featurizer.parameters())
    opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    weight = class_weights(source_train.labels) if t.balance == "class_weight" else None
    ce = torch.nn.CrossEntropyLoss(weight=None if weight is None else weight.to(device))
    # CORAL's other side (checked to be there when coral is on)
    coral_target = target_train if coral else None
    # float16 autocast needs loss scaling (bfloat16, the default, has float32's range and does not)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and t.amp and t.amp_dtype == "float16")
    return _Loop(device=device, rng=rng, opt=opt, ce=ce, scaler=scaler, bs=min(t.batch_size, source_train.n),
                 tbs=min(t.batch_size, coral_target.n) if coral_target is not None else 0,
                 lam=float(t.lambda_coral) if coral else 0.0, coral_target=coral_target,
                 selection_domain=selection_domain)


def _resume(ckpt: Path, loop: _Loop, *, model: EmotionClassifier, featurizer, meta: dict) -> _Progress:
    """The fit's state: from ``ckpt`` when it is there (checked to be of this run), else a fresh start."""
    if not ckpt.is_file():
        return _Progress(best_state={k: v.detach().clone().cpu() for k, v in model.state_dict().items()})
    info, tensors = read_checkpoint(ckpt)
    if info.get("run") != json.loads(json.dumps(meta.get("run"))) or _result_config(info.get("config")) != \
            _result_config(json.loads(json.dumps(meta.get("config")))):
        raise TrainError("a checkpoint of a different run is in the output folder", path=ckpt,
                         hint="use a new output folder, or delete the folder to start again")
    best_state = restore_checkpoint(info, tensors, model=model, featurizer=featurizer, opt=loop.opt, rng=loop.rng,
                                    device=loop.device)
    st = info["state"]
    if st.get("scaler"):
        loop.scaler.load_state_dict(st["scaler"])
    return _Progress(best_state=best_state, start_epoch=st["epoch"] + 1, best_epoch=st["best_epoch"],
                     best_score=st["best_score"], bad=st["bad_epochs"], history=st["history"], resumed=st["epoch"])


def _train_epoch(cfg: RunConfig, loop: _Loop, *, model: EmotionClassifier, featurizer,
                 source_train: Domain) -> tuple[np.ndarray, int]:
    """One epoch of Adam steps on full source batches; returns the summed (loss, CE, CORAL) over the
    batches, shape (3,) float64, and the number of batches."""
    t, device, bs = cfg.train, loop.device, loop.bs
    model.train()
    featurizer.train(True)
    order = epoch_order(source_train.labels.numpy(), source_train.n, loop.rng, balanced=t.balance == "sampler")
    n_batches = max(1, len(order) // bs)  # drop the short last batch: CORAL needs full batches
    sums = np.zeros(3)
    for b in range(n_batches):
        idx = order[b * bs:(b + 1) * bs]
        ys = source_train.labels[torch.from_numpy(idx)].to(device)
        with _autocast(device, cfg):
            # both domains' features inside the autocast region: in frame mode the speech model
            # runs here, and CORAL on upstream layers must compare features of one precision
            xs, ms, us = featurizer(source_train, idx, device)
            if loop.coral_target is not None:
                tidx = loop.rng.choice(loop.coral_target.n, size=loop.tbs, replace=False)
                xt, mt, ut = featurizer(loop.coral_target, tidx, device)
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
            loss_ce = loop.ce(logits.float(), ys)
            loss = loss_ce + loop.lam * loss_coral
        loop.opt.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()
        loop.scaler.step(loop.opt)
        loop.scaler.update()
        sums += (loss.item(), loss_ce.item(), loss_coral.item())
    return sums, n_batches


def _check_finite(sums: np.ndarray, n_batches: int, *, epoch: int, out_dir: Path) -> None:
    """Stop on a non-finite loss: inputs are checked finite when read, so it is a numerical failure
    (a learning rate too high, float16 overflow) and the weights are no longer meaningful."""
    if not np.isfinite(sums).all():
        raise TrainError(f"the training loss became NaN or infinite in epoch {epoch} "
                         f"(loss {sums[0] / n_batches}, CORAL {sums[2] / n_batches})", path=out_dir,
                         hint="lower train.lr or train.lambda_coral, or use float32 (train.amp: false); "
                         "the last good checkpoint is kept and a rerun resumes from it")


def _select(state: _Progress, loop: _Loop, *, model: EmotionClassifier, featurizer, epoch: int,
            sums: np.ndarray, n_batches: int, t0: float) -> dict:
    """Score the epoch on the selection domain, append it to the history and keep the weights when
    it is the best so far (ties keep the later epoch: it has trained longer on both terms)."""
    dom = loop.selection_domain
    pred = predict(model, featurizer, dom, loop.device, batch_size=max(256, loop.bs))
    score = uar_fast(dom.labels.numpy(), pred)
    row = {"epoch": epoch, "loss": float(sums[0] / n_batches), "ce": float(sums[1] / n_batches),
           "coral": float(sums[2] / n_batches), "dev_uar": score, "seconds": time.perf_counter() - t0}
    state.history.append(row)
    if score >= state.best_score:
        state.best_epoch, state.best_score, state.bad = epoch, score, 0
        state.best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    else:
        state.bad += 1
    return row


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
    selection_domain = _selection_domain(cfg, source_train=source_train, source_dev=source_dev,
                                         target_train=target_train, coral=coral, oracle_dev=oracle_dev)
    loop = _prepare(cfg, model=model, featurizer=featurizer, source_train=source_train, target_train=target_train,
                    coral=coral, seed=seed, selection_domain=selection_domain)
    ckpt = out_dir / CHECKPOINT
    meta = dict(run_meta or {})
    state = _resume(ckpt, loop, model=model, featurizer=featurizer, meta=meta)
    # epochs are an inner loop: without a terminal, their plain lines are DEBUG (the pipeline says
    # one line per run)
    bar = progress_bar(t.epochs, desc=f"{meta.get('run', {}).get('strategy', 'train')} seed {seed}",
                       item="epoch", progress=t.progress, log_level=logging.DEBUG)
    bar.update(state.start_epoch)
    for epoch in range(state.start_epoch, t.epochs):
        if state.bad >= t.patience:
            break
        t0 = time.perf_counter()
        sums, n_batches = _train_epoch(cfg, loop, model=model, featurizer=featurizer, source_train=source_train)
        _check_finite(sums, n_batches, epoch=epoch, out_dir=out_dir)
        row = _select(state, loop, model=model, featurizer=featurizer, epoch=epoch, sums=sums, n_batches=n_batches,
                      t0=t0)
        bar.set_postfix(loss=f"{row['loss']:.3f}", dev_uar=f"{row['dev_uar']:.3f}")
        bar.update(1)
        meta["state"] = state.to_meta(epoch, loop.scaler)
        if (epoch + 1) % t.checkpoint_every == 0 or epoch + 1 == t.epochs or state.bad >= t.patience:
            save_checkpoint(ckpt, model=model, featurizer=featurizer, opt=loop.opt, best_state=state.best_state,
                            rng=loop.rng, meta=meta)
    bar.close()
    model.load_state_dict(state.best_state)
    model.to(loop.device)
    return FitResult(best_epoch=state.best_epoch, epochs_run=len(state.history), best_score=state.best_score,
                     history=tuple(EpochRow.from_dict(h) for h in state.history), resumed_from=state.resumed)


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
) -> RunMetrics:
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
    RunMetrics : the metrics (:meth:`~lam_train.results.RunMetrics.to_dict` is ``out_dir/metrics.json``).
    A run whose ``metrics.json`` exists is not trained again (its metrics are read back); a run with a
    checkpoint resumes from it.
    """
    from .data import check_same_model, n_model_layers, open_features, stored_layers

    out_dir = Path(out_dir)
    done = out_dir / METRICS
    if done.is_file():
        from phonalign.fsutil import read_json

        return RunMetrics.from_dict(read_json(done, what="metrics of a finished run",
                                              hint=f"delete {METRICS} (and {MODEL}) in that folder to train the "
                                              "run again"))
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
                      use_coral: bool, device: torch.device) -> RunMetrics:
    """Fit, evaluate, and write the run's model file and ``metrics.json`` (last: it marks the run done)."""
    result = fit(cfg, model=model, featurizer=featurizer, source_train=data.source_train,
                 source_dev=data.source_dev, target_train=data.target_train if use_coral else None,
                 coral=use_coral, seed=seed, out_dir=out_dir, oracle_dev=data.oracle_dev,
                 run_meta={"run": run, "config": cfg_plain})
    source_dev, target_test, coral_distance = _evaluate(model, featurizer, data, device, layers=run["layers"])
    metrics = RunMetrics(
        strategy=run["strategy"], selection=run["selection"], coral=run["coral"], lambda_=run["lambda"],
        seed=run["seed"], layers=tuple(run["layers"]), n_model_layers=run["n_model_layers"],
        selection_on=cfg.train.selection, oracle=cfg.train.selection == "oracle_target_dev",
        best_epoch=result.best_epoch, epochs_run=result.epochs_run, selection_uar=result.best_score,
        resumed_from=result.resumed_from, history=result.history,
        layer_weights=tuple(float(w) for w in model.weighting.weights.cpu()),
        source_train_n=data.source_train.n, target_train_n=data.target_train.n, source_dev=source_dev,
        target_test=target_test, coral_distance=coral_distance,
        note=None if target_test is not None else "the target test split has no emotion labels: no target score")
    plain = metrics.to_dict()
    save_model(out_dir / MODEL, model, featurizer, config=cfg_plain, run=run,
               metrics={k: v for k, v in plain.items() if k != "history"})
    atomic_write_json(out_dir / METRICS, plain)
    ckpt = out_dir / CHECKPOINT
    if ckpt.exists():  # the run is complete: its resume state is no longer needed
        ckpt.unlink()
    return metrics


def _evaluate(model: EmotionClassifier, featurizer: PooledFeaturizer | FrameFeaturizer, data: RunData,
              device: torch.device, *, layers: Sequence[int]) -> tuple[Scores, Scores | None, CoralDistance | None]:
    """Scores on source dev and (when it has labels) target test, and the CORAL distances between
    the target test and the source test (else dev) representations, per anchored layer."""
    source_dev = Scores.from_dict(scores(data.source_dev.labels.numpy(), predict(model, featurizer, data.source_dev,
                                                                                 device)))
    if data.target_test is None:
        return source_dev, None, None
    y_t, feat_t, up_t = predict(model, featurizer, data.target_test, device, with_features=True)
    target_test = Scores.from_dict(scores(data.target_test.labels.numpy(), y_t))
    ref = data.source_test if data.source_test is not None else data.source_dev
    _, feat_s, up_s = predict(model, featurizer, ref, device, with_features=True)
    distance = CoralDistance(
        between=f"source {'test' if data.source_test is not None else 'dev'} and target test",
        layers=tuple(layers),
        adapted=tuple(representation_coral(feat_s, feat_t)),
        adapted_relative=tuple(float(v) for v in coral_relative(feat_s.double(), feat_t.double())),
        input=tuple(representation_coral(up_s, up_t)),
    )
    return source_dev, target_test, distance
