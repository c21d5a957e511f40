"""The CPU kernels' approximations of tanh and exp, against float64, over their whole range."""

from __future__ import annotations

import numpy as np
import pytest

from streamgen.engine.engine import numba_available

pytestmark = pytest.mark.skipif(not numba_available(), reason="numba is not installed")


def test_tanh_is_within_4e_7_everywhere() -> None:
    from numba import njit

    from streamgen.engine.fast.kernels import tanh

    @njit
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = tanh(x[i])

    x = np.concatenate([np.linspace(-30, 30, 600_001), [0.0, 1e-30, -1e-8, 7.9, 8.0, 1e4]])
    x = x.astype(np.float32)
    got = np.empty_like(x)
    apply(x, got)
    want = np.tanh(x.astype(np.float64))
    assert np.abs(got - want).max() < 4e-7  # float32's own rounding: 6e-8
    assert np.all(np.abs(got) <= 1.0)


def test_exp_below_is_within_2e_7_relative_and_sums() -> None:
    from streamgen.engine.fast.kernels import exp_below

    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-87, 0, 300_001), rng.normal(0, 20, 1000)]).astype(np.float32)
    m = np.float32(x.max())
    out = np.empty_like(x)
    total = exp_below(x, m, out, np.empty(x.shape[0], np.int32))
    y = (x - m).astype(np.float64)  # the difference as float32 rounds it, like libm's input
    want = np.exp(y)
    keep = y > -80  # far below: tiny values, checked absolutely
    assert (np.abs(out - want) / want)[keep].max() < 2e-7
    assert np.abs(out - want)[~keep].max() < 1e-30
    assert total == pytest.approx(want.sum(), rel=1e-5)


def test_exp_below_of_minus_infinity_is_negligible() -> None:
    """Scores outside the top k are -inf: they must weigh nothing in the nucleus's mass."""
    from streamgen.engine.fast.kernels import exp_below

    x = np.array([0.0, -np.inf, -1.0, -np.inf], np.float32)
    out = np.empty_like(x)
    total = exp_below(x, np.float32(0.0), out, np.empty(4, np.int32))
    assert out[1] < 1e-37 and out[3] < 1e-37
    assert total == pytest.approx(1 + np.exp(-1.0), rel=1e-6)
