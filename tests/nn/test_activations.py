import pytest
import torch

from sparta.nn import Dropout


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 0.7])
def test_dropout_matches_nn_dropout_semantics(p):
    torch.manual_seed(0)
    d = Dropout(p)
    x = torch.randn(400, 300, dtype=torch.float64, requires_grad=True)
    y = d(x)
    kept = y != 0
    assert abs(1 - kept.double().mean().item() - p) < 0.01  # fraction dropped ≈ p
    torch.testing.assert_close(y[kept], (x / (1 - p))[kept])
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.double() / (1 - p))
    d.eval()
    assert d(x) is x


def test_dropout_is_seeded_and_keeps_layout():
    x = torch.randn(64, 32).t()  # a transposed view, as between sparse layers
    torch.manual_seed(5)
    a = Dropout(0.5)(x)
    torch.manual_seed(5)
    b = Dropout(0.5)(x)
    assert torch.equal(a, b)
    assert a.stride() == x.stride()


@pytest.mark.parametrize("p", [-0.1, 1.0, "0.5", True])
def test_dropout_bad_p(p):
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(p)
