"""Typed results of lam_train: each record's to_dict() is the JSON written before the types existed."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lam_train.pipeline import StepRecorder
from lam_train.results import (
    AlignedSide,
    AlignStep,
    CoralDistance,
    EpochRow,
    PipelineResult,
    ReportStep,
    RunMetrics,
    Scores,
    TrainStep,
)

SCORES = {"uar": 0.5, "accuracy": 0.5, "recall": {"Neutral": 1.0, "Happiness": 0.0, "Anger": 0.5, "Sadness": 0.5},
          "confusion": [[2, 0, 0, 0], [0, 0, 2, 0], [1, 0, 1, 0], [0, 0, 1, 1]], "n": 8,
          "labels": ["Neutral", "Happiness", "Anger", "Sadness"]}


def _metrics(**over) -> dict:
    m = {"strategy": "final+coral", "selection": "final", "coral": True, "lambda": 5.0, "seed": 0, "layers": [3],
         "n_model_layers": 3, "selection_on": "source_dev", "oracle": False, "best_epoch": 1, "epochs_run": 2,
         "selection_uar": 0.5, "resumed_from": None,
         "history": [{"epoch": 0, "loss": 1.5, "ce": 1.4, "coral": 0.02, "dev_uar": 0.25, "seconds": 0.1},
                     {"epoch": 1, "loss": 1.2, "ce": 1.1, "coral": 0.02, "dev_uar": 0.5, "seconds": 0.1}],
         "layer_weights": [1.0], "source_train_n": 64, "target_train_n": 64, "source_dev": SCORES,
         "target_test": SCORES,
         "coral_distance": {"between": "source test and target test", "layers": [3], "adapted": [0.01],
                            "adapted_relative": [0.3], "input": [0.9]}}
    m.update(over)
    return m


def test_run_metrics_read_back_from_metrics_json_write_the_same_json():
    for plain in (_metrics(), {**{k: v for k, v in _metrics().items() if k != "coral_distance"}, "target_test": None,
                               "note": "the target test split has no emotion labels: no target score"}):
        m = RunMetrics.from_dict(json.loads(json.dumps(plain)))
        assert json.dumps(m.to_dict()) == json.dumps(plain)  # keys and their order too
    m = RunMetrics.from_dict(_metrics())
    assert m.lambda_ == 5.0 and m.layers == (3,) and isinstance(m.history[0], EpochRow)
    assert isinstance(m.target_test, Scores) and isinstance(m.coral_distance, CoralDistance)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.seed = 1  # type: ignore[misc]


def test_a_pipeline_result_writes_the_report_paths_or_why_it_stopped():
    report = ReportStep(markdown="o/report/report.md", results="o/report/results.md", html="o/report/index.html")
    done = PipelineResult(out="o", rankings="o/similarity/rankings.json", report=report)
    assert done.to_dict() == {"report": "o/report/report.md", "results": "o/report/results.md",
                              "html": "o/report/index.html"}
    assert dataclasses.replace(done, seconds=2.5).to_dict()["seconds"] == 2.5
    stopped = PipelineResult(out="o", rankings="r.json", report=None, stopped="no_emotion_labels", message="no labels")
    assert stopped.to_dict() == {"stopped": "no_emotion_labels", "message": "no labels", "out": "o",
                                 "rankings": "r.json"}


def test_a_step_record_holds_the_summary_as_json_and_a_done_step_is_skipped(tmp_path):
    steps = StepRecorder(tmp_path)
    summary = AlignStep(source=AlignedSide(utterances=3, ok=2, failed=1, suspect=0),
                        target=AlignedSide(utterances=2, ok=2, failed=0, suspect=1))
    assert steps.run("align", {"x": 1}, lambda: summary) is summary
    rec = json.loads((tmp_path / "steps" / "align.json").read_text(encoding="utf-8"))
    assert rec["summary"] == {"source": {"utterances": 3, "ok": 2, "failed": 1, "suspect": 0},
                              "target": {"utterances": 2, "ok": 2, "failed": 0, "suspect": 1}}

    def not_again() -> TrainStep:
        raise AssertionError("a step done with the same settings runs again")

    assert steps.run("align", {"x": 1}, not_again) is None
