"""Engine settings and the work cut for Ray (no Ray needed): chunks by audio duration, the
progress in utterances and audio hours, and the settings checked before any work."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phonalign.engine import EngineConfig, EngineError, WorkProgress, cut_by_duration, resolve_engine

durations = st.lists(st.floats(min_value=0.0, max_value=40.0, allow_nan=False), min_size=0, max_size=60)


@settings(max_examples=200, deadline=None)
@given(seconds=durations, chunk_seconds=st.floats(min_value=0.5, max_value=120.0), min_chunks=st.integers(1, 12))
def test_chunks_cover_every_item_once_in_order_and_stay_near_their_audio_budget(seconds, chunk_seconds, min_chunks):
    chunks = cut_by_duration(seconds, chunk_seconds=chunk_seconds, min_chunks=min_chunks)
    assert [i for c in chunks for i in c] == list(range(len(seconds)))
    assert all(len(c) for c in chunks)
    total = sum(seconds)
    target = min(chunk_seconds, total / min_chunks) if total > 0 else chunk_seconds
    for c in chunks:
        audio = sum(seconds[i] for i in c)
        # a chunk over its budget is one item alone (an utterance longer than the budget)
        assert audio <= target + 1e-9 or len(c) == 1
    # no two neighbours could have been one chunk within the budget: chunks are as full as allowed
    for a, b in zip(chunks[:-1], chunks[1:], strict=True):
        assert sum(seconds[i] for i in a) + seconds[b[0]] > target


def test_chunks_are_cut_by_audio_duration_not_by_count():
    # ten 1 s utterances then two 10 s ones: by duration, the long ones make chunks of their own
    chunks = cut_by_duration([1.0] * 10 + [10.0, 10.0], chunk_seconds=10.0)
    assert chunks == [range(0, 10), range(10, 11), range(11, 12)]


def test_every_worker_gets_chunks_when_the_corpus_is_small():
    chunks = cut_by_duration([2.0] * 40, chunk_seconds=600.0, min_chunks=8)
    assert len(chunks) == 8 and {len(c) for c in chunks} == {5}


def test_a_second_budget_caps_the_results_a_chunk_sends_back():
    chunks = cut_by_duration([1.0] * 6, chunk_seconds=100.0, sizes=[3.0] * 6, max_size=7.0)
    assert chunks == [range(0, 2), range(2, 4), range(4, 6)]


def test_progress_counts_utterances_and_audio_hours(caplog):
    bar = WorkProgress(5, 3 * 3600.0, desc="aligning", progress=False)
    bar.update(2, 1800.0)
    bar.update(3, 9000.0)
    assert (bar.n, bar.hours, bar.total_hours) == (5, 3.0, 3.0)
    with caplog.at_level(logging.DEBUG, logger="phonalign.engine"):
        bar.close()
    assert "5 utterances, 3.000 h of audio" in caplog.text


def test_engine_settings_resolve_from_names_configs_and_overrides():
    assert resolve_engine(None) == EngineConfig()
    assert resolve_engine("ray", address="auto", workers=None).address == "auto"
    cfg = resolve_engine(EngineConfig("ray", workers=2), gpus_per_worker=0.5)
    assert (cfg.name, cfg.workers, cfg.gpus_per_worker) == ("ray", 2, 0.5)


@pytest.mark.parametrize(("cfg", "message"), [
    (EngineConfig("ray", workers=0), "workers must be at least 1"),
    (EngineConfig("ray", gpus_per_worker=-1), "gpus_per_worker must be >= 0"),
    (EngineConfig("ray", cpus_per_worker=0), "cpus_per_worker must be at least 1"),
    (EngineConfig("ray", max_retries=-1), "max_retries must be >= 0"),
    (EngineConfig("ray", chunk_seconds=0), "chunk_seconds must be > 0"),
    (EngineConfig("local", workers=2), "are for --engine ray"),
])
def test_bad_engine_settings_are_one_line_errors(cfg, message):
    with pytest.raises(EngineError, match=message):
        cfg.check()


def test_a_ray_worker_keeps_one_backend_per_run_so_its_loaded_state_is_reused():
    # what a Ray task does on a worker process, called directly: each task receives its own copy of
    # the driver's aligner, and the chunks of one run must share the first (pocketsphinx loads its
    # decoder once per process, not once per chunk); a new run starts from its own copy
    import copy

    from phonalign.align import get_aligner, ray_engine
    from phonalign.corpus import read_corpus

    english = [u for u in read_corpus(None, preset="lam-demo") if u.language == "en"][:3]
    driver = get_aligner("pocketsphinx")
    first, second, other_run = (copy.deepcopy(driver) for _ in range(3))
    results = ray_engine.align_chunk("run-a", first, english[:2]) + ray_engine.align_chunk("run-a", second, english[2:])
    assert [r.utt_id for r in results] == [u.utt_id for u in english]
    assert all(r.ok for r in results)
    assert first._local is not None and second._local is None  # one decoder for both chunks
    ray_engine.align_chunk("run-b", other_run, english[:1])
    assert other_run._local is not None
