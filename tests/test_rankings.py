"""Rankings and selections: ordering, selections among 1..L, seeded random layers, loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.errors import RankingsError
from analysis.rankings import (
    load_selections,
    rank_layers,
    read_rankings,
    select_layers,
    top_k_frequency,
    write_rankings,
)


def test_rank_layers_ignores_layer_zero_and_orders_by_similarity():
    scores = [9.0, 0.1, 0.5, 0.3, 0.9]
    assert rank_layers(scores) == [4, 2, 3, 1]
    assert rank_layers(scores, higher_is_more_similar=False) == [1, 3, 2, 4]


def test_select_layers_gives_every_selection_among_transformer_layers():
    sel = select_layers([0, 0.1, 0.5, 0.3, 0.9, 0.2, 0.8], k=2, seed=3)
    assert sel["final"] == [6] and sel["BL"] == [4]
    assert sel["GL"] == [4, 6] and sel["WL"] == [1, 5]
    for key in ("RL1", "RL2", "RL3"):
        assert len(sel[key]) == 2 and all(1 <= x <= 6 for x in sel[key])
    assert select_layers([0, 0.1, 0.5, 0.3, 0.9, 0.2, 0.8], k=2, seed=3) == sel
    assert {tuple(select_layers(list(range(13)), k=3, seed=s)["RL1"]) for s in range(10)} != {tuple(sel["RL1"])}


def test_select_layers_raises_when_k_exceeds_layers():
    with pytest.raises(RankingsError, match="k=5"):
        select_layers([0, 1, 2, 3], k=5)


def test_top_k_frequency_counts_bootstrap_draws():
    boot = np.array([[0, 1, 2, 3], [0, 3, 2, 1]], float)
    assert top_k_frequency(boot, k=1) == [None, 0.5, 0.0, 0.5]


def test_load_selections_round_trips_and_names_missing_unit(tmp_path):
    sel = select_layers([0, 0.1, 0.5, 0.3, 0.9], k=2, seed=0)
    write_rankings(tmp_path, {"n_layers": 4, "metric": "centroid_cosine", "units": {"Vowl": {"selections": sel}}})
    assert load_selections(tmp_path, unit="Vowl") == sel
    assert load_selections(tmp_path / "rankings.json", unit="Vowl")["BL"] == [4]
    with pytest.raises(RankingsError, match="no unit 'Cons'"):
        load_selections(tmp_path, unit="Cons")


def test_read_rankings_raises_on_damaged_file(tmp_path):
    (tmp_path / "rankings.json").write_text("{not json")
    with pytest.raises(RankingsError, match="not valid JSON"):
        read_rankings(tmp_path)
    (tmp_path / "rankings.json").write_text(json.dumps({"format": "lam-rankings/1", "n_layers": 4,
                                                        "units": {"Utt": {"selections": {"final": [9]}}}}))
    with pytest.raises(RankingsError, match="lacks selections"):
        load_selections(tmp_path, unit="Utt")


def test_random_selections_are_three_different_groups_when_enough_exist():
    from analysis.rankings import select_layers

    scores = [0.1 * i for i in range(7)]  # layers 0..6 -> 6 transformer layers
    for seed in range(200):
        sel = select_layers(scores, k=3, seed=seed)
        groups = {tuple(sel[f"RL{i}"]) for i in (1, 2, 3)}
        assert len(groups) == 3, (seed, sel)
        assert all(1 <= layer <= 6 for g in groups for layer in g)


def test_selections_of_a_layer_subset_come_from_the_stored_layers_only():
    scores = [0.0, 0.9, np.nan, 0.1, np.nan, 0.5, np.nan, 0.3]  # a store of layers 0, 1, 3, 5, 7
    stored = [0, 1, 3, 5, 7]
    assert rank_layers(scores, candidates=stored) == [1, 5, 7, 3]
    sel = select_layers(scores, k=2, seed=0, candidates=stored)
    assert sel["final"] == [7] and sel["BL"] == [1] and sel["GL"] == [1, 5] and sel["WL"] == [3, 7]
    for key in ("RL1", "RL2", "RL3"):
        assert set(sel[key]) <= {1, 3, 5, 7}
    assert top_k_frequency(np.array([scores, scores]), k=1, candidates=stored) == \
        [None, 1.0, None, 0.0, None, 0.0, None, 0.0]
    with pytest.raises(RankingsError, match="among 4"):
        select_layers(scores, k=5, candidates=stored)


def test_all_layers_as_candidates_change_nothing():
    scores = [0.3, 0.1, 0.5, 0.3, 0.9, 0.2, 0.8]
    for seed in range(5):
        assert select_layers(scores, k=3, seed=seed) == select_layers(scores, k=3, seed=seed,
                                                                      candidates=range(7))
