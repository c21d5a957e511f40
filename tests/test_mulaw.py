"""Mu-law companding against an independently written formula."""

from __future__ import annotations

import numpy as np
import torch

from streamgen.audio import mulaw_decode, mulaw_encode


def reference_compand(x: np.ndarray) -> np.ndarray:
    """F(x) = sgn(x) ln(1 + 255|x|) / ln(256), written out independently."""
    return np.where(x < 0, -1.0, 1.0) * np.log(1.0 + 255.0 * np.abs(x)) / np.log(256.0)


def reference_expand(y: np.ndarray) -> np.ndarray:
    return np.where(y < 0, -1.0, 1.0) * (256.0 ** np.abs(y) - 1.0) / 255.0


def test_encode_matches_reference_and_range() -> None:
    rng = np.random.default_rng(1234)
    x = np.concatenate([rng.uniform(-1, 1, 20000), rng.normal(0, 0.01, 5000), [-1, 0, 1]])
    q = mulaw_encode(x)
    assert q.dtype == np.int64 and q.min() >= 0 and q.max() <= 255
    assert q[-3] == 0 and q[-1] == 255
    expected = np.floor((reference_compand(x) + 1.0) * 127.5 + 0.5)
    # rounding at exact half-way points may go either way
    assert np.abs(q - expected).max() <= 1 and np.mean(q == expected) > 0.999
    assert np.all(np.diff(q[np.argsort(x)]) >= 0)  # monotonic


def test_round_trip_error_bound() -> None:
    rng = np.random.default_rng(99)
    x = rng.uniform(-1, 1, 50000)
    x_hat = mulaw_decode(mulaw_encode(x)).astype(np.float64)
    y = reference_compand(x)
    # the decoded value lies within half a class (1/255 in companded units) of the input
    lo, hi = reference_expand(y - 1.0 / 255.0), reference_expand(y + 1.0 / 255.0)
    assert np.all(x_hat >= lo - 1e-6) and np.all(x_hat <= hi + 1e-6)
    # relative precision near 1 and absolute precision near 0 (the point of mu-law)
    # half a class is ln(256)/255 * (1 + 255|x|) / 255 in linear units: 1.07e-4 at |x| = 0.001
    small = np.abs(x) < 0.001
    assert np.abs(x_hat - x)[small].max() < 1.1e-4
    assert np.abs(x_hat - x).max() < 0.03


def test_torch_and_numpy_agree() -> None:
    x = np.random.default_rng(7).uniform(-1.2, 1.2, 4096)
    q_np = mulaw_encode(x)
    q_t = mulaw_encode(torch.from_numpy(x))
    assert isinstance(q_t, torch.Tensor) and q_t.dtype == torch.int64
    np.testing.assert_array_equal(q_t.numpy(), q_np)
    np.testing.assert_allclose(mulaw_decode(q_t).numpy(), mulaw_decode(q_np), atol=1e-7)
    classes = np.arange(256)
    np.testing.assert_array_equal(mulaw_encode(mulaw_decode(classes)), classes)
