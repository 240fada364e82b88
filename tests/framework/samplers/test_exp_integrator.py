"""The multistep helpers added to the exponential-integrator core: history bookkeeping, Adams-Bashforth weights."""

import math

import pytest

from framework.samplers.exp_integrator import adams_bashforth_weights, push_history


def test_push_history_is_newest_first_bounded_and_pure():
    h0 = ()
    h1 = push_history(h0, "a", 3)
    h2 = push_history(h1, "b", 3)
    h3 = push_history(h2, "c", 3)
    h4 = push_history(h3, "d", 3)
    assert (h1, h2, h3, h4) == (("a",), ("b", "a"), ("c", "b", "a"), ("d", "c", "b"))
    assert h3 == ("c", "b", "a"), "the previous tuple must not change"
    with pytest.raises(ValueError, match="history size"):
        push_history(h0, "a", 0)


@pytest.mark.parametrize(
    "order, expected",
    [(1, [1.0]), (2, [1.5, -0.5]), (3, [23 / 12, -16 / 12, 5 / 12]), (4, [55 / 24, -59 / 24, 37 / 24, -9 / 24])],
)
def test_adams_bashforth_weights_are_the_textbook_ones(order, expected):
    assert adams_bashforth_weights(order) == pytest.approx(expected, abs=1e-13)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_adams_bashforth_integrates_polynomials_of_degree_below_order_exactly(order):
    # int_0^1 u^k du = 1/(k+1) must equal sum_j b_j (-j)^k for k < order; degree `order` must fail
    weights = adams_bashforth_weights(order)
    for k in range(order):
        assert sum(w * (-j) ** k for j, w in enumerate(weights)) == pytest.approx(1 / (k + 1), abs=1e-12)
    assert not math.isclose(sum(w * (-j) ** order for j, w in enumerate(weights)), 1 / (order + 1), abs_tol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "3"])
def test_adams_bashforth_rejects_bad_order(bad):
    with pytest.raises(ValueError, match="order"):
        adams_bashforth_weights(bad)
