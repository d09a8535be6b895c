"""The oneDNN linear layer computes what nn.Linear computes, forward and backward."""

import pytest
import torch

from vaelab.models import fastlinear
from vaelab.models.fastlinear import Linear

pytestmark = pytest.mark.skipif(not fastlinear.ENABLED, reason="oneDNN linear not available")


@pytest.mark.parametrize("shape", [(7, 13), (3, 5, 13), (128, 13)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_nn_linear_in_float64_reference(shape, bias):
    torch.manual_seed(0)
    layer = Linear(13, 11, bias=bias)
    x = torch.randn(*shape, requires_grad=True)
    y = layer(x)
    g = torch.randn_like(y)
    y.backward(g)
    # reference in float64 through the plain functional path
    x64 = x.detach().double().requires_grad_()
    w64 = layer.weight.detach().double().requires_grad_()
    b64 = layer.bias.detach().double().requires_grad_() if bias else None
    y64 = torch.nn.functional.linear(x64, w64, b64)
    y64.backward(g.double())
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y.double(), y64, **tol)
    torch.testing.assert_close(x.grad.double(), x64.grad, **tol)
    torch.testing.assert_close(layer.weight.grad.double(), w64.grad, **tol)
    if bias:
        torch.testing.assert_close(layer.bias.grad.double(), b64.grad, **tol)


def test_other_dtypes_fall_back_to_the_standard_path():
    layer = Linear(4, 2).double()
    x = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: layer(inp), (x,))


def test_state_dict_is_that_of_nn_linear():
    assert set(Linear(4, 2).state_dict()) == set(torch.nn.Linear(4, 2).state_dict())
