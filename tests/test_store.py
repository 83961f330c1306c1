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
    first = store.append(_rows(["u1"]), _layers(3, 0), chunk_id=store.next_chunk_id("s0000of0002-"))
    second = store.append(_rows(["u2"]), _layers(3, 1), chunk_id=store.next_chunk_id("s0001of0002-"))
    assert (first, second) == ("s0000of0002-00000", "s0001of0002-00000")
    assert store.next_chunk_id("s0000of0002-") == "s0000of0002-00001"
    assert len(FeatureStore.open(tmp_path / "s")) == 6
    assert not os.path.exists(tmp_path / "s" / "index" / "part-00000.parquet")


# ---------------------------------------------------------------------------------------------
# store dtypes (float16, bfloat16 bit patterns) and layer subsets


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_store_halves_the_arrays_and_reads_back_float32(tmp_path, dtype):
    full, half = _create(tmp_path / "f32"), _create(tmp_path / dtype, dtype=dtype)
    a = _layers(40, 0) * 3.0
    full.append(_rows(["u1"], per_utt=39), a)
    half.append(_rows(["u1"], per_utt=39), a)
    again = FeatureStore.open(tmp_path / dtype)
    assert again.dtype == dtype and again.meta["format"] == "lam-feature-store/2"
    for layer in range(N_LAYERS + 1):
        x = again.read_layer(layer)
        assert x.dtype == np.float32
        # float16 keeps 11 significant bits, bfloat16 8: relative error at most half an ulp
        rel = 2.0 ** -11 if dtype == "float16" else 2.0 ** -8
        np.testing.assert_allclose(x, a[layer], rtol=rel, atol=1e-7)
        np.testing.assert_array_equal(again.read_layer(layer, rows=[5, 0]), x[[5, 0]])
        streamed = np.concatenate([arr for _, arr in again.iter_layer(layer)])
        assert streamed.dtype == np.float32
        np.testing.assert_array_equal(streamed, x)

    def size(p):
        return sum(f.stat().st_size for f in (p / "layers").rglob("*.npy"))

    # the .npy header (128 bytes) is the only part that does not halve
    assert size(tmp_path / dtype) - 128 * (N_LAYERS + 1) == (size(tmp_path / "f32") - 128 * (N_LAYERS + 1)) // 2


# finite values whose bfloat16 rounding stays finite (larger ones are refused, see below)
_F32_LIMIT = (float(np.float32(-3.38e38)), float(np.float32(3.38e38)))


def test_bfloat16_encoding_rounds_like_torch():
    import torch
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    from analysis.store import decode_array, encode_array

    @settings(max_examples=200, deadline=None)
    @given(arrays(np.float32, st.integers(1, 64), elements=st.floats(_F32_LIMIT[0], _F32_LIMIT[1], width=32)))
    def check(x):
        ours = encode_array(x, "bfloat16")
        theirs = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal(decode_array(ours, "bfloat16"),
                                      torch.from_numpy(theirs.view(np.int16)).view(torch.bfloat16).float().numpy())

    check()
    # ties go to even, NaN stays NaN (quiet), infinities stay infinities
    x = np.array([1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, np.nan, -np.inf, np.inf, -0.0], np.float32)
    back = decode_array(encode_array(x, "bfloat16"), "bfloat16")
    assert back[0] == 1.0 and back[1] == 1.0 + 2 * 2.0 ** -7
    assert np.isnan(back[2]) and back[3] == -np.inf and back[4] == np.inf and np.signbit(back[5])


def test_float16_store_refuses_values_beyond_its_range(tmp_path):
    store = _create(tmp_path / "s", dtype="float16")
    a = _layers(3, 0)
    a[2, 1, 3] = 70000.0
    with pytest.raises(StoreError, match="does not fit the store dtype float16") as err:
        store.append(_rows(["u1"]), a)
    assert "bfloat16" in err.value.hint
    assert len(FeatureStore.open(tmp_path / "s")) == 0 and not list((tmp_path / "s").rglob("*.npy"))
    bf = _create(tmp_path / "b", dtype="bfloat16")
    bf.append(_rows(["u1"]), a)  # bfloat16 has float32's range
    assert FeatureStore.open(tmp_path / "b").read_layer(2)[1, 3] == 70144.0  # nearest bfloat16


def test_layer_subset_store_reads_its_layers_and_refuses_the_others(tmp_path):
    store = _create(tmp_path / "s", layers=[3, 0])
    assert store.layers == [0, 3] and store.layer_names == ["layer_00", "layer_03"]
    a = _layers(3, 0)[[0, 3]]
    store.append(_rows(["u1"]), a)
    again = FeatureStore.open(tmp_path / "s")
    np.testing.assert_array_equal(again.read_layer(3), a[1])
    np.testing.assert_array_equal(again.read_layer("layer_00"), a[0])
    assert sorted(p.name for p in (tmp_path / "s" / "layers").iterdir()) == ["layer_00", "layer_03"]
    with pytest.raises(StoreError, match=r"layer 1 is not in this store; it holds layers 0, 3") as err:
        again.read_layer(1)
    assert "--layers" in err.value.hint
    with pytest.raises(StoreError, match="the store holds 2"):
        again.append(_rows(["u2"]), _layers(3, 1))


def test_create_refuses_to_resume_with_other_layers_or_dtype(tmp_path):
    _create(tmp_path / "s", layers=[0, 3], dtype="float16")
    _create(tmp_path / "s", layers=[3, 0], dtype="float16")  # the same selection
    with pytest.raises(StoreSettingsError, match="layers"):
        _create(tmp_path / "s", layers=[0, 2, 3], dtype="float16")
    with pytest.raises(StoreSettingsError, match="dtype"):
        _create(tmp_path / "s", layers=[0, 3])


@pytest.mark.parametrize(("spec", "expected"), [(None, [0, 1, 2, 3]), ("all", [0, 1, 2, 3]), ("0,2-3", [0, 2, 3]),
                                                ("3, 1", [1, 3]), ([2, 2, 0], [0, 2])])
def test_parse_layers_reads_lists_and_ranges(spec, expected):
    from analysis.store import parse_layers

    assert parse_layers(spec, 3) == expected


@pytest.mark.parametrize("spec", ["4", "0-4", "a", "3-1", "", [5]])
def test_parse_layers_raises_on_layers_the_model_does_not_have(spec):
    from analysis.store import parse_layers

    with pytest.raises(StoreError, match="layer|range"):
        parse_layers(spec, 3)


def test_format_1_store_reads_as_every_layer_in_float32(tmp_path):
    store = _create(tmp_path / "s")
    a = _layers(3, 0)
    store.append(_rows(["u1"]), a)
    meta_path = tmp_path / "s" / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key in ("layers", "dtype"):
        del meta[key]
    meta["format"] = "lam-feature-store/1"
    meta_path.write_text(json.dumps(meta))
    old = FeatureStore.open(tmp_path / "s")
    assert old.layers == [0, 1, 2, 3] and old.dtype == "float32"
    np.testing.assert_array_equal(old.read_layer(2), a[2])
    _create(tmp_path / "s")  # resumable by this version with the same settings


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dropping_utterances_from_a_half_precision_layer_subset_store_keeps_the_other_rows_exactly(tmp_path, dtype):
    store = _create(tmp_path / "s", layers=[1, 3], dtype=dtype)
    a = _layers(9, 0)[[1, 3]]
    store.append(_rows(["u1", "u2", "u3"]), a)
    before = {layer: FeatureStore.open(tmp_path / "s").read_layer(layer) for layer in (1, 3)}
    assert store.drop_utterances({"u2"}) == 3
    store.collect_garbage()
    again = FeatureStore.open(tmp_path / "s")
    assert again.done_utt_ids() == {"u1", "u3"} and again.dtype == dtype and again.layers == [1, 3]
    keep = [0, 1, 2, 6, 7, 8]
    for layer in (1, 3):
        np.testing.assert_array_equal(again.read_layer(layer), before[layer][keep])
    assert sorted(p.name for p in (tmp_path / "s" / "layers").iterdir()) == ["layer_01", "layer_03"]
    assert len(list((tmp_path / "s" / "layers" / "layer_01").iterdir())) == 1  # the replaced chunk's file is gone
