"""The η rule on hand-made weights: fewest neurons reaching η·‖w‖², ties, multi-class, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from stcstore.core.errors import StcError
from stcstore.fit.sparsify import DEFAULT_ETAS, importance, select_all, select_neurons


def test_fewest_neurons_reaching_the_threshold():
    w = np.array([0.0, 3.0, -1.0, 0.0, 2.0, 1.0])  # squares 0, 9, 1, 0, 4, 1: total 15
    assert select_neurons(w, 0.5).tolist() == [1]  # 9 >= 7.5
    assert select_neurons(w, 0.6).tolist() == [1]  # 9 >= 9 exactly: reaching counts
    assert select_neurons(w, 0.61).tolist() == [1, 4]  # needs 9.15: 9 + 4
    assert select_neurons(w, 13 / 15).tolist() == [1, 4]  # 13 reaches 13 exactly
    assert select_neurons(w, 0.9).tolist() == [1, 4, 2]  # 13.5: 9 + 4 + 1 (tie 1/1 -> lower index)
    assert select_neurons(w, 1.0).tolist() == [1, 4, 2, 5]  # every non-zero weight, no zero weights


def test_at_least_one_neuron_even_for_tiny_eta_or_zero_weights():
    assert select_neurons(np.array([0.1, 0.5, 0.2]), 0.001).tolist() == [1]
    assert select_neurons(np.zeros(4), 0.5).tolist() == [0]  # a probe that kept nothing still yields one


def test_ties_are_broken_by_lower_index():
    w = np.array([1.0, -1.0, 1.0, -1.0])
    assert select_neurons(w, 0.5).tolist() == [0, 1]
    assert select_neurons(w, 0.51).tolist() == [0, 1, 2]


def test_multiclass_importance_sums_squares_over_classes():
    coef = np.array([[1.0, 0.0, 2.0], [1.0, 3.0, 0.0], [1.0, 0.0, 0.0]])  # importances 3, 9, 4: total 16
    assert importance(coef).tolist() == [3.0, 9.0, 4.0]
    assert select_neurons(coef, 0.5).tolist() == [1]  # 9 >= 8
    assert select_neurons(coef, 0.6).tolist() == [1, 2]  # 9.6: 9 + 4
    assert select_neurons(coef, 1.0).tolist() == [1, 2, 0]


def test_larger_eta_keeps_a_superset():
    rng = np.random.default_rng(0)
    coef = rng.standard_normal((4, 300)) * (rng.random(300) < 0.2)
    picks = select_all(coef, DEFAULT_ETAS)
    sizes = [len(picks[e]) for e in DEFAULT_ETAS]
    assert sizes == sorted(sizes) and sizes[0] >= 1
    for small, big in zip(DEFAULT_ETAS, DEFAULT_ETAS[1:]):
        assert set(picks[small]) <= set(picks[big])
        # minimality: dropping the last kept neuron falls below the threshold
        kept = picks[big]
        imp = importance(coef)
        assert imp[kept].sum() >= big * imp.sum() - 1e-9
        assert len(kept) == 1 or imp[kept[:-1]].sum() < big * imp.sum()


@pytest.mark.parametrize("eta", [0, -0.1, 1.5])
def test_bad_eta_is_refused(eta):
    with pytest.raises(StcError, match="η must be in"):
        select_neurons(np.ones(3), eta)


def test_bad_shapes_are_refused():
    with pytest.raises(StcError, match="shape"):
        select_neurons(np.ones((2, 2, 2)), 0.5)
    with pytest.raises(StcError, match="no weights"):
        select_neurons(np.array([]), 0.5)
