"""Feature store: round trips, one layer alone, appends, settings guard, crash safety."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from analysis.errors import StoreError, StoreSettingsError
from analysis.store import INDEX_SCHEMA, FeatureStore, index_table

N_LAYERS, HIDDEN = 3, 5


def _rows(utts, per_utt=2):
    cols = {k: [] for k in ("unit_id", "kind", "utt_id", "seg_index", "unit_class", "start", "end")}
    for u in utts:
        for s in range(-1, per_utt):
            cols["unit_id"].append(u if s < 0 else f"{u}#{s}")
            cols["kind"].append("utt" if s < 0 else "segment")
            cols["utt_id"].append(u)
            cols["seg_index"].append(s)
            cols["unit_class"].append("utterance" if s < 0 else "A")
            cols["start"].append(0.0)
            cols["end"].append(1.0)
    return index_table(cols)


def _layers(n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N_LAYERS + 1, n, HIDDEN)).astype(np.float32)


def _create(path, **over):
    kw = dict(model_id="tiny", revision=None, n_layers=N_LAYERS, hidden_size=HIDDEN,
              settings={"pooling": "mean", "dtype": "float32"})
    kw.update(over)
    return FeatureStore.create(path, **kw)


def test_store_round_trips_chunks_in_order(tmp_path):
    store = _create(tmp_path / "s")
    a, b = _layers(6, 0), _layers(3, 1)
    store.append(_rows(["u1", "u2"]), a)
    store.append(_rows(["u3"]), b)
    again = FeatureStore.open(tmp_path / "s")
    assert len(again) == 9
    assert again.index.schema == INDEX_SCHEMA
    assert again.index.column("unit_id").to_pylist()[6] == "u3"
    for layer in range(N_LAYERS + 1):
        np.testing.assert_array_equal(again.read_layer(layer), np.concatenate([a[layer], b[layer]]))
    np.testing.assert_array_equal(again.read_layer("layer_02", rows=[8, 0, 8]), np.stack([b[2][2], a[2][0], b[2][2]]))
    assert again.layer_names == ["layer_00", "layer_01", "layer_02", "layer_03"]
    assert again.done_utt_ids() == {"u1", "u2", "u3"}


def test_store_reads_one_layer_without_touching_the_others(tmp_path):
    store = _create(tmp_path / "s")
    store.append(_rows(["u1"]), _layers(3, 0))
    for f in (tmp_path / "s" / "layers" / "layer_01").iterdir():
        f.unlink()  # another layer vanishing must not matter when reading layer 2
    assert FeatureStore.open(tmp_path / "s").read_layer(2).shape == (3, HIDDEN)
    with pytest.raises(StoreError):
        FeatureStore.open(tmp_path / "s").read_layer(1)


def test_store_files_hold_no_pickle(tmp_path):
    store = _create(tmp_path / "s")
    store.append(_rows(["u1"]), _layers(3, 0))
    for f in (tmp_path / "s" / "layers").rglob("*.npy"):
        np.load(f, allow_pickle=False)  # raises if the file needed pickle
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["settings"]["pooling"] == "mean"


def test_create_raises_when_settings_differ(tmp_path):
    _create(tmp_path / "s")
    _create(tmp_path / "s")  # same settings: reopened for appending
    with pytest.raises(StoreSettingsError, match="settings"):
        _create(tmp_path / "s", settings={"pooling": "mean", "dtype": "float16"})
    with pytest.raises(StoreSettingsError, match="model_id"):
        _create(tmp_path / "s", model_id="other")


def test_uncommitted_chunk_is_ignored_and_its_id_reused(tmp_path):
    store = _create(tmp_path / "s")
    store.append(_rows(["u1"]), _layers(3, 0))
    # simulate a kill after the layer files of chunk 00001 but before its index part
    for i in range(N_LAYERS + 1):
        with open(tmp_path / "s" / "layers" / f"layer_{i:02d}" / "chunk-00001.npy", "wb") as fh:
            np.save(fh, np.ones((7, HIDDEN), np.float32))
    reopened = FeatureStore.open(tmp_path / "s")
    assert len(reopened) == 3 and reopened.done_utt_ids() == {"u1"}
    assert reopened.next_chunk_id() == "00001"
    b = _layers(3, 5)
    reopened.append(_rows(["u2"]), b)
    np.testing.assert_array_equal(FeatureStore.open(tmp_path / "s").read_layer(3)[3:], b[3])


def test_no_temporary_files_are_left_behind(tmp_path):
    store = _create(tmp_path / "s")
    store.append(_rows(["u1"]), _layers(3, 0))
    leftovers = [p for p in (tmp_path / "s").rglob(".*") if p.is_file()]
    assert leftovers == []


def test_append_raises_when_shapes_disagree(tmp_path):
    store = _create(tmp_path / "s")
    with pytest.raises(StoreError, match="shape"):
        store.append(_rows(["u1"]), _layers(4, 0))
    with pytest.raises(StoreError, match="layers given"):
        store.append(_rows(["u1"]), _layers(3, 0)[:2])


def test_open_raises_when_directory_is_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no meta.json"):
        FeatureStore.open(tmp_path)


def test_sharded_chunk_ids_do_not_collide(tmp_path):
    store = _create(tmp_path / "s")
    assert store.append(_rows(["u1"]), _layers(3, 0), chunk_id=store.next_chunk_id("s0000of0002-")) == "s0000of0002-00000"
    assert store.append(_rows(["u2"]), _layers(3, 1), chunk_id=store.next_chunk_id("s0001of0002-")) == "s0001of0002-00000"
    assert store.next_chunk_id("s0000of0002-") == "s0000of0002-00001"
    assert len(FeatureStore.open(tmp_path / "s")) == 6
    assert not os.path.exists(tmp_path / "s" / "index" / "part-00000.parquet")
