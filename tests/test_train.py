"""Training: target labels never read, a killed run resumes exactly, strategies, frame mode."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from safetensors.torch import load_file

from lam_train import train as train_module
from lam_train.config import DataConfig, ModelConfig, RunConfig, TrainConfig, parse_strategy
from lam_train.data import ArrayFeatures, class_weights, epoch_order, labelled_domain, unlabelled_domain
from lam_train.errors import ConfigError, TrainError
from lam_train.model import EmotionClassifier
from lam_train.train import CHECKPOINT, METRICS, MODEL, read_metadata, run_training, save_checkpoint, strategy_layers

EMO = ["Neutral", "Happiness", "Anger", "Sadness"]


def synthetic_features(*, seed: int = 0, n: int = 16, n_layers: int = 3, hidden: int = 8) -> ArrayFeatures:
    """Two languages whose class structure is shared but whose features differ by a linear map
    and an offset (the cross-lingual shift CORAL is meant to reduce); later layers carry more of
    the class signal."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(4, hidden)) * 1.5
    rows, layers = [], {layer: [] for layer in range(n_layers + 1)}
    for lang, shift in (("en", 0.0), ("zh", 1.0)):
        mix = np.eye(hidden) + shift * 0.5 * rng.normal(size=(hidden, hidden))
        for split, k in (("train", n), ("dev", n // 2), ("test", n // 2)):
            for c in range(4):
                for i in range(k):
                    uid = f"{lang}_{split}_{c}_{i}"
                    rows.append({"unit_id": uid, "kind": "utt", "utt_id": uid, "language": lang,
                                 "split": split, "emotion": EMO[c]})
                    base = means[c] + rng.normal(size=hidden)
                    for layer in range(n_layers + 1):
                        layers[layer].append((base * (layer + 1) / (n_layers + 1)
                                              + 0.5 * rng.normal(size=hidden)) @ mix
                                         + 2 * shift)
    return ArrayFeatures(pa.Table.from_pylist(rows), {layer: np.array(v, np.float32) for layer, v in layers.items()})


def small_config(**train) -> RunConfig:
    t = dict(epochs=6, batch_size=16, patience=10, progress=False, lambda_coral=5.0)
    t.update(train)
    return RunConfig(data=DataConfig(source_language="en", target_language="zh"),
                     model=ModelConfig(width=16, head_hidden=(16, 16, 8)), train=TrainConfig(**t))


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / MODEL))


def _with_target_emotions(features: ArrayFeatures, new_emotions) -> ArrayFeatures:
    idx = features.index
    col = idx["emotion"].to_pylist()
    is_target = pc.equal(idx["language"], "zh").to_pylist()
    j = 0
    out = []
    for e, t in zip(col, is_target, strict=True):
        out.append(new_emotions[j] if t else e)
        j += bool(t)
    idx = idx.set_column(idx.column_names.index("emotion"), "emotion", pa.array(out, pa.string()))
    return ArrayFeatures(idx, {layer: features.read_layer(layer) for layer in range(4)})


@pytest.fixture(scope="module")
def features():
    return synthetic_features()


def test_permuting_or_deleting_target_labels_changes_nothing_in_training(features, tmp_path):
    cfg = small_config()
    n_target = int(pc.sum(pc.equal(features.index["language"], "zh")).as_py())
    target_emotions = [e for e, lang in zip(features.index["emotion"].to_pylist(),
                                            features.index["language"].to_pylist(), strict=True) if lang == "zh"]
    permuted = _with_target_emotions(features, list(np.random.default_rng(5).permutation(target_emotions)))
    deleted = _with_target_emotions(features, [None] * n_target)
    runs = {}
    for name, f in (("original", features), ("permuted", permuted), ("deleted", deleted)):
        m = run_training(cfg, strategy="final+coral", seed=3, out_dir=tmp_path / name, source=f)
        assert m.coral and m.epochs_run == 6
        runs[name] = _weights(tmp_path / name)
    for name in ("permuted", "deleted"):
        assert runs[name].keys() == runs["original"].keys()
        for k in runs["original"]:
            assert torch.equal(runs[name][k], runs["original"][k]), f"{name}: {k} differs"
    # ... while the target *evaluation* did see them: without labels there is no target score
    assert json.loads((tmp_path / "deleted" / METRICS).read_text())["target_test"] is None


def test_unlabelled_domain_has_no_labels_even_when_the_store_has_them(features):
    d = unlabelled_domain(features, layers=[1, 3], language="zh", split="train")
    assert d.y is None and d.x.shape == (2, 64, 8)
    s = labelled_domain(features, layers=[1, 3], language="en", split="train")
    assert s.y is not None and torch.equal(torch.bincount(s.y), torch.tensor([16, 16, 16, 16]))


def test_a_run_killed_halfway_resumes_to_the_same_final_metrics(features, tmp_path, monkeypatch):
    cfg = small_config(epochs=6)
    full = run_training(cfg, strategy="final+coral", seed=7, out_dir=tmp_path / "full", source=features)

    class Killed(Exception):
        pass

    def kill_after_epoch(n):
        """save_checkpoint, then the run dies (as a killed process would) once epoch ``n`` is saved."""
        def save_then_die(path, **kw):
            save_checkpoint(path, **kw)
            if kw["meta"]["state"]["epoch"] == n:
                raise Killed
        return save_then_die

    with monkeypatch.context() as m, pytest.raises(Killed):
        m.setattr(train_module, "save_checkpoint", kill_after_epoch(2))
        run_training(cfg, strategy="final+coral", seed=7, out_dir=tmp_path / "resumed", source=features)
    assert (tmp_path / "resumed" / CHECKPOINT).is_file() and not (tmp_path / "resumed" / METRICS).exists()
    assert read_metadata(tmp_path / "resumed" / CHECKPOINT)["state"]["epoch"] == 2
    resumed = run_training(cfg, strategy="final+coral", seed=7, out_dir=tmp_path / "resumed", source=features)
    assert resumed.resumed_from == 2 and full.resumed_from is None
    for key in ("target_test", "source_dev", "coral_distance", "best_epoch", "layer_weights"):
        assert getattr(resumed, key) == getattr(full, key), key
    assert [h.loss for h in resumed.history] == [h.loss for h in full.history]
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "resumed" / CHECKPOINT).exists()  # complete runs drop their resume state


def test_a_finished_run_is_not_trained_again(features, tmp_path):
    cfg = small_config(epochs=2)
    first = run_training(cfg, strategy="final", seed=0, out_dir=tmp_path, source=features)
    mtime = (tmp_path / MODEL).stat().st_mtime_ns
    again = run_training(cfg, strategy="final", seed=0, out_dir=tmp_path, source=features)
    assert again == first and (tmp_path / MODEL).stat().st_mtime_ns == mtime


def test_a_checkpoint_of_another_run_is_refused(features, tmp_path, monkeypatch):
    def save_then_stop(path, **kw):
        save_checkpoint(path, **kw)
        raise KeyboardInterrupt

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(train_module, "save_checkpoint", save_then_stop)
        run_training(small_config(), strategy="final+coral", seed=0, out_dir=tmp_path, source=features)
    with pytest.raises(TrainError, match="different run"):
        run_training(small_config(), strategy="final+coral", seed=1, out_dir=tmp_path, source=features)


def test_anchoring_lowers_the_coral_distance_of_the_anchored_layer(features, tmp_path):
    cfg = small_config(epochs=60, lambda_coral=50.0)
    with_coral = run_training(cfg, strategy="final+coral", seed=0, out_dir=tmp_path / "a", source=features)
    without = run_training(cfg, strategy="final", seed=0, out_dir=tmp_path / "b", source=features)
    assert with_coral.coral_distance.adapted[0] < 0.5 * without.coral_distance.adapted[0]
    # ... by aligning the shapes of the covariances, not by shrinking the features (scale-free measure)
    assert with_coral.coral_distance.adapted_relative[0] < 0.75 * without.coral_distance.adapted_relative[0]
    assert with_coral.layers == without.layers == (3,)
    assert without.lambda_ == 0.0 and with_coral.lambda_ == 50.0


def test_model_file_carries_resolved_config_and_metrics(features, tmp_path):
    run_training(small_config(epochs=2), strategy="all", seed=0, out_dir=tmp_path, source=features)
    meta = read_metadata(tmp_path / MODEL)
    assert meta["config"]["train"]["epochs"] == 2
    assert meta["run"]["layers"] == [0, 1, 2, 3]
    assert 0.0 <= meta["metrics"]["target_test"]["uar"] <= 1.0
    weights = _weights(tmp_path)
    assert weights["model.adapters.weight"].shape == (4, 8, 16)
    assert "norm.mean" in {k[5:] for k in weights if k.startswith("feat.")}


def test_strategies_map_to_layers():
    sel = {"final": [12], "BL": [7], "GL": [6, 7, 8], "WL": [1, 2, 12], "RL1": [3, 5, 9], "RL2": [1, 4, 11],
           "RL3": [2, 6, 10]}
    assert strategy_layers(parse_strategy("final"), n_layers=12, selections=None) == [12]
    assert strategy_layers(parse_strategy("all"), n_layers=12, selections=None) == list(range(13))
    assert strategy_layers(parse_strategy("GL"), n_layers=12, selections=sel) == [6, 7, 8]
    assert parse_strategy("GL").coral and not parse_strategy("final").coral
    assert parse_strategy("final+coral").coral and not parse_strategy("GL-nocoral").coral
    with pytest.raises(TrainError, match="rankings"):
        strategy_layers(parse_strategy("BL"), n_layers=12, selections=None)
    with pytest.raises(ConfigError, match="unknown strategy"):
        parse_strategy("best")


def test_strategies_of_a_layer_subset_store_use_its_layers_and_refuse_absent_ones():
    held = [0, 4, 8, 12]
    assert strategy_layers(parse_strategy("all"), n_layers=12, selections=None, stored=held) == held
    assert strategy_layers(parse_strategy("final"), n_layers=12, selections=None, stored=held) == [12]
    assert strategy_layers(parse_strategy("GL"), n_layers=12, selections={"GL": [4, 8]}, stored=held) == [4, 8]
    with pytest.raises(TrainError, match=r"needs layers 6, 7, which the feature store does not hold \(it holds "
                                         r"layers 0, 4, 8, 12\)"):
        strategy_layers(parse_strategy("GL"), n_layers=12, selections={"GL": [6, 7, 8]}, stored=held)
    with pytest.raises(TrainError, match="needs layer 12"):
        strategy_layers(parse_strategy("final"), n_layers=12, selections=None, stored=[0, 1, 2])


def test_oracle_selection_is_flagged_in_the_metrics(features, tmp_path):
    m = run_training(small_config(epochs=2, selection="oracle_target_dev"), strategy="final", seed=0,
                     out_dir=tmp_path, source=features)
    assert m.oracle is True and m.selection_on == "oracle_target_dev"


def test_balanced_sampling_draws_each_class_about_equally():
    y = np.array([0] * 90 + [1] * 5 + [2] * 3 + [3] * 2)
    order = epoch_order(y, len(y), np.random.default_rng(0), balanced=True)
    counts = np.bincount(y[np.concatenate([order] + [epoch_order(y, 100, np.random.default_rng(s), balanced=True)
                                                       for s in range(1, 40)])], minlength=4)
    assert counts.min() / counts.max() > 0.8
    w = class_weights(torch.from_numpy(y))
    assert float((w[torch.from_numpy(y)]).sum()) == pytest.approx(len(y))  # weights keep the loss scale


def test_sampler_balance_trains(features, tmp_path):
    m = run_training(small_config(epochs=2, balance="sampler"), strategy="final", seed=0, out_dir=tmp_path,
                     source=features)
    assert m.epochs_run == 2


def test_classifier_has_four_linear_layers_in_its_head_and_a_transformer_for_frames():
    m = EmotionClassifier(n_layers=3, in_dim=8, width=16, sequence=True)
    assert sum(isinstance(x, torch.nn.Linear) for x in m.head) == 4
    x = torch.randn(3, 2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    logits, adapted = m.eval()(x, mask)
    assert logits.shape == (2, 4) and adapted.shape == (3, 2, 16)
    # padded frames do not change the second utterance's result
    x2 = x.clone()
    x2[:, 1, 2:] = 100.0
    assert torch.allclose(m(x2, mask)[0], logits, atol=1e-5)


def test_training_reads_a_real_feature_store(features, tmp_path):
    from analysis.store import FeatureStore, index_table

    store = FeatureStore.create(tmp_path / "store", model_id="synthetic", revision=None, n_layers=3,
                                hidden_size=8, settings={"pooling": "mean"})
    idx = features.index
    cols = {c: idx[c].to_pylist() for c in ("unit_id", "kind", "utt_id", "language", "split", "emotion")}
    cols["seg_index"] = [-1] * idx.num_rows
    store.append(index_table(cols), [features.read_layer(layer) for layer in range(4)])
    cfg = small_config(epochs=2)
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, source_store=str(tmp_path / "store")))
    via_store = run_training(cfg, strategy="final+coral", seed=1, out_dir=tmp_path / "a")
    via_arrays = run_training(small_config(epochs=2), strategy="final+coral", seed=1, out_dir=tmp_path / "b",
                              source=features)
    assert via_store.target_test == via_arrays.target_test


def test_cuda_device_without_gpu_is_a_clear_error(features, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from analysis.errors import ModelError

    with pytest.raises(ModelError, match="no such CUDA device is visible"):
        run_training(small_config(device="cuda"), strategy="final", seed=0, out_dir=tmp_path, source=features)


def _tiny_wav2vec2():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                         conv_dim=(16, 16, 16), conv_stride=(10, 8, 4), conv_kernel=(10, 8, 4),
                         num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True)
    return Wav2Vec2Model(cfg).eval()


@pytest.fixture(scope="module")
def demo_aligned_dirs(tmp_path_factory):
    """utterances.parquet of a few demo-corpus utterances per side (what `lam align` writes)."""
    import pyarrow.parquet as pq

    from phonalign.corpus import demo_corpus_dir, read_corpus, utterances_to_table

    utts = read_corpus(demo_corpus_dir(), preset="lam-demo")
    root = tmp_path_factory.mktemp("aligned")
    for lang in ("en", "zh"):
        keep = []
        for split, k in (("train", 8), ("dev", 4), ("test", 4)):
            keep += [u for u in utts if u.language == lang and u.split == split][:k]
        (root / lang).mkdir()
        pq.write_table(utterances_to_table(keep), root / lang / "utterances.parquet")
    return root


@pytest.mark.parametrize("finetune_top", [0, 1])
def test_frame_mode_trains_on_audio_with_a_tiny_random_model(demo_aligned_dirs, tmp_path, finetune_top):
    # the model reaches training as every model does: a folder named by data.encoder
    model_dir = tmp_path / "wav2vec2-tiny"
    _tiny_wav2vec2().save_pretrained(model_dir)
    blocks = {f"{i}.{name}": p.detach().clone() for i, layer in enumerate(_tiny_wav2vec2().encoder.layers)
              for name, p in layer.named_parameters()}
    cfg = RunConfig(
        data=DataConfig(input="frames", source_aligned=str(demo_aligned_dirs / "en"),
                        target_aligned=str(demo_aligned_dirs / "zh"), source_language="en", target_language="zh",
                        max_seconds=1.5, finetune_top=finetune_top, encoder=str(model_dir)),
        model=ModelConfig(width=8, head_hidden=(8, 8, 8), encoder_heads=2),
        train=TrainConfig(epochs=2, batch_size=4, progress=False, device="cpu"))
    m = run_training(cfg, strategy="all+coral", seed=0, out_dir=tmp_path / "run")
    assert m.layers == (0, 1, 2) and m.coral and m.epochs_run == 2
    assert m.target_test.n == 4 and len(m.coral_distance.adapted) == 3
    saved = {k.removeprefix("feat.upstream."): v for k, v in _weights(tmp_path / "run").items()
             if k.startswith("feat.upstream.")}
    if finetune_top:
        # only the top transformer layer is trained (and saved), and training moved it
        assert saved and all(k.startswith("1.") for k in saved) and set(saved) <= set(blocks)
        assert any(not torch.equal(v, blocks[k]) for k, v in saved.items())
    else:
        assert saved == {}  # the frozen model is not part of the trained classifier


@pytest.mark.parametrize("finetune_top", [0, 1, 2])
def test_frame_featurizer_leaves_all_but_the_top_layers_frozen(tmp_path, finetune_top):
    from analysis.models import load_encoder
    from lam_train.train import FrameFeaturizer

    _tiny_wav2vec2().save_pretrained(tmp_path / "m")
    encoder = load_encoder(str(tmp_path / "m"), device="cpu")
    feat = FrameFeaturizer(encoder, [0, 1, 2], finetune_top=finetune_top)
    trainable = {id(p) for p in feat.parameters()}
    for name, p in encoder.model.named_parameters():
        top = any(name.startswith(f"encoder.layers.{i}.") for i in range(2 - finetune_top, 2))
        assert p.requires_grad == top and (id(p) in trainable) == top, name
    assert sorted({k.split(".")[1] for k in feat.state()}) == [str(i) for i in range(2 - finetune_top, 2)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda_with_autocast_scores_like_cpu(features, tmp_path):
    for dtype in ("bfloat16", "float16"):
        gpu = run_training(small_config(epochs=30, device="cuda", amp=True, amp_dtype=dtype), strategy="final+coral",
                           seed=0, out_dir=tmp_path / dtype, source=features)
        assert gpu.epochs_run == 30 and all(np.isfinite(h.loss) for h in gpu.history)
    cpu = run_training(small_config(epochs=30, device="cpu"), strategy="final+coral", seed=0,
                       out_dir=tmp_path / "cpu", source=features)
    assert abs(gpu.source_dev.uar - cpu.source_dev.uar) <= 0.15


def test_cached_features_keep_only_the_utterance_rows_of_a_segment_store(tmp_path):
    from analysis.store import FeatureStore, index_table
    from lam_train.train import CachedFeatures

    store = FeatureStore.create(tmp_path / "s", model_id="m", revision=None, n_layers=1, hidden_size=3, settings={})
    kinds = ["utt", "segment", "segment", "utt", "segment"]
    idx = index_table({"unit_id": [f"u{i}" for i in range(5)], "kind": kinds, "utt_id": ["a", "a", "a", "b", "b"],
                       "seg_index": [-1, 0, 1, -1, 0], "start": [0.0] * 5, "end": [1.0] * 5})
    arr = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    store.append(idx, arr)
    cached = CachedFeatures(FeatureStore.open(tmp_path / "s"))
    np.testing.assert_array_equal(cached.read_layer(1, rows=np.array([3, 0])), arr[1][[3, 0]])
    assert cached._cache[1].shape == (2, 3)  # the two utterance rows, not all five
    np.testing.assert_array_equal(cached.read_layer(0, rows=np.array([1, 3])), arr[0][[1, 3]])  # a segment row
    np.testing.assert_array_equal(cached.read_layer(0), arr[0])


#: A fixed-seed fit (``all+coral``, seed 7, 8 epochs, lr 1e-2 on :func:`synthetic_features`), recorded
#: on main before ``fit`` was split into named steps: per epoch (loss, CE, CORAL, dev UAR), the
#: selected epoch, the learnt layer weights and the evaluation (same machine, CPU, one thread).
GOLDEN_HISTORY = [
    [2.0851109623908997, 1.410625159740448, 0.13489716686308384, 0.25],
    [1.987665981054306, 1.3873142004013062, 0.12007034942507744, 0.25],
    [1.872013658285141, 1.3637980818748474, 0.10164311341941357, 0.59375],
    [1.8087317943572998, 1.3228902220726013, 0.0971683170646429, 0.625],
    [1.6436198353767395, 1.25863716006279, 0.07699653692543507, 0.625],
    [1.5364278554916382, 1.1489763259887695, 0.0774903129786253, 0.65625],
    [1.4327477514743805, 1.0884077847003937, 0.06886799819767475, 0.8125],
    [1.1431913375854492, 0.8171795904636383, 0.06520234420895576, 0.9375],
]
GOLDEN_LAYER_WEIGHTS = [0.18644672632217407, 0.21637177467346191, 0.2801288366317749, 0.3170526921749115]
GOLDEN_CORAL = {"adapted": [0.008799044310674266, 0.010465375317904958, 0.009718801711166205, 0.012432390911469948],
                "adapted_relative": [0.34559832223557285, 0.3423489972478122, 0.18690263097807505,
                                     0.21146500706494503],
                "input": [0.8287675547032086, 1.0689210928695716, 0.7678375703496104, 0.9578932670198769]}


def test_a_fixed_seed_fit_gives_the_figures_recorded_before_the_loop_was_split(features, tmp_path):
    run = run_training(small_config(epochs=8, lr=1e-2), strategy="all+coral", seed=7, out_dir=tmp_path / "r",
                       source=features)
    m = run.to_dict()
    assert json.loads((tmp_path / "r" / METRICS).read_text()) == m  # metrics.json is the typed result's JSON
    got = [[h["loss"], h["ce"], h["coral"], h["dev_uar"]] for h in m["history"]]
    assert np.allclose(got, GOLDEN_HISTORY, rtol=1e-6, atol=0)
    assert (m["best_epoch"], m["epochs_run"], m["selection_uar"]) == (7, 8, 0.9375)
    assert np.allclose(m["layer_weights"], GOLDEN_LAYER_WEIGHTS, rtol=1e-6, atol=0)
    for key, want in GOLDEN_CORAL.items():
        assert np.allclose(m["coral_distance"][key], want, rtol=1e-6, atol=0), key
    assert m["coral_distance"]["layers"] == [0, 1, 2, 3]
    assert m["source_dev"]["confusion"] == [[7, 0, 1, 0], [0, 8, 0, 0], [0, 0, 7, 1], [0, 0, 0, 8]]
    assert m["target_test"]["confusion"] == [[8, 0, 0, 0], [0, 0, 7, 1], [2, 0, 4, 2], [2, 0, 2, 4]]
