"""AllReLU: identity for x ≥ 0; negative slope −α after even hidden layers, +α after odd ones."""

from __future__ import annotations

import pytest
import torch

from sparta import AllReLU


@pytest.mark.parametrize("alpha", [0.0, 0.6, 0.75, 2])
@pytest.mark.parametrize("layer_index", [1, 2, 3, 4])
def test_allrelu_values_and_gradient(alpha, layer_index):
    act = AllReLU(alpha, layer_index)
    x = torch.tensor([-3.0, -0.5, -1e-30, 0.0, 1e-30, 0.25, 7.0], dtype=torch.float64, requires_grad=True)
    slope = -alpha if layer_index % 2 == 0 else alpha
    expected = torch.where(x >= 0, x, slope * x)
    y = act(x)
    assert torch.equal(y, expected.detach())
    assert act.negative_slope == slope
    y.sum().backward()
    # At exactly 0 the (sub)gradient is the negative side's slope, as for torch's LeakyReLU and ReLU.
    assert torch.equal(x.grad, torch.where(x > 0, torch.ones_like(x), torch.full_like(x, float(slope))))
    if alpha:
        assert (y[:3] > 0).all() if layer_index % 2 == 0 else (y[:3] < 0).all()
    assert f"alpha={float(alpha)}" in repr(act) and f"layer_index={layer_index}" in repr(act)


def test_allrelu_shapes_and_dtypes():
    act = AllReLU(0.6, 2)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(3, 4, 5, dtype=dtype)
        y = act(x)
        assert y.shape == x.shape and y.dtype == dtype
        torch.testing.assert_close(y, torch.where(x >= 0, x, -0.6 * x))


@pytest.mark.parametrize("alpha", [-0.1, "0.6", None, True])
def test_allrelu_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be a number ≥ 0"):
        AllReLU(alpha, 1)


@pytest.mark.parametrize("layer_index", [0, -1, 1.0, "1", True, None])
def test_allrelu_bad_layer_index(layer_index):
    with pytest.raises(ValueError, match="layer_index must be an int ≥ 1"):
        AllReLU(0.6, layer_index)
