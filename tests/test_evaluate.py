"""UAR against scikit-learn's balanced accuracy, per-class recall, confusion, seed statistics."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score

from lam_train.errors import TrainError
from lam_train.evaluate import confusion, mean_std, per_class_recall, scores, uar, uar_fast


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=200))
def test_uar_equals_balanced_accuracy(pairs):
    y_true = np.array([p[0] for p in pairs])
    y_pred = np.array([p[1] for p in pairs])
    assert uar(y_true, y_pred) == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
    assert uar_fast(y_true, y_pred) == pytest.approx(uar(y_true, y_pred), abs=1e-12)


def test_uar_is_unweighted_while_accuracy_is_not():
    # 90 Neutral all right, 10 Anger all wrong: accuracy 0.9, UAR 0.5
    y_true = np.array([0] * 90 + [2] * 10)
    y_pred = np.zeros(100, dtype=int)
    s = scores(y_true, y_pred)
    assert s["accuracy"] == pytest.approx(0.9)
    assert s["uar"] == pytest.approx(0.5)
    assert s["recall"] == {"Neutral": 1.0, "Happiness": None, "Anger": 0.0, "Sadness": None}


def test_confusion_rows_are_reference_and_columns_predictions():
    cm = confusion(np.array([0, 0, 1, 3]), np.array([0, 1, 1, 2]))
    assert cm.shape == (4, 4)
    assert cm[0, 0] == 1 and cm[0, 1] == 1 and cm[1, 1] == 1 and cm[3, 2] == 1 and cm.sum() == 4


def test_per_class_recall_of_perfect_prediction_is_one():
    y = np.array([0, 1, 2, 3, 3])
    assert per_class_recall(y, y) == {"Neutral": 1.0, "Happiness": 1.0, "Anger": 1.0, "Sadness": 1.0}


def test_mean_std_uses_sample_std_and_zero_for_one_seed():
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, np.std([0.5, 0.7], ddof=1)))
    assert mean_std([0.4]) == (0.4, 0.0)


def test_uar_raises_on_empty_or_mismatched_input():
    with pytest.raises(TrainError):
        uar(np.array([], dtype=int), np.array([], dtype=int))
    with pytest.raises(TrainError):
        uar(np.array([0, 1]), np.array([0]))
