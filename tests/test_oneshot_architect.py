"""The second-order DARTS architecture gradient against an exact autograd Hessian-vector product."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.errors import ConfigError
from nasforge.oneshot.architect import Architect


class Tiny(nn.Module):
    """Two mixed candidate paths weighted by softmax(alpha); batch norm (a buffer to restore)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(5, 4, generator=g, dtype=torch.float64))
        self.w2 = nn.Parameter(torch.randn(4, 3, generator=g, dtype=torch.float64))
        self.alpha = nn.Parameter(torch.randn(3, generator=g, dtype=torch.float64))
        self.bn = nn.BatchNorm1d(4, affine=False, dtype=torch.float64)

    def forward(self, x):
        return self.run(x, self.w1, self.w2, self.alpha)

    def run(self, x, w1, w2, alpha):
        h = x @ w1
        mix = torch.softmax(alpha, 0)
        h = mix[0] * torch.tanh(h) + mix[1] * h * h / 4 + mix[2] * torch.sigmoid(h)
        return self.bn(h) @ w2


def loss_fn(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def test_second_order_gradient_is_the_exact_hessian_vector_product():
    # generated data: two small batches of random inputs and labels
    g = torch.Generator().manual_seed(1)
    train = (torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g))
    val = (torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g))
    model = Tiny()
    weights = [model.w1, model.w2]
    opt = torch.optim.SGD(weights, lr=0.5, momentum=0.9, weight_decay=3e-4)
    loss_fn(model, train).backward()
    opt.step()  # a momentum buffer for the virtual step to use
    opt.zero_grad()
    xi = 0.5
    before = {k: v.clone() for k, v in model.state_dict().items()}

    arch = Architect(model, weights, [model.alpha], loss_fn, order=2, weight_optimizer=opt)
    got = arch.gradient(train, val, xi)[0]
    # the weights and the batch-norm running statistics are restored exactly
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    # exact: differentiate L_val(w'(alpha), alpha) through the unrolled step with autograd
    alpha = model.alpha
    g_w = torch.autograd.grad(loss_fn(model, train), weights, create_graph=True)
    unrolled = [w - xi * (0.9 * opt.state[w]["momentum_buffer"] + gw + 3e-4 * w)
                for w, gw in zip(weights, g_w)]
    out = model.run(val[0], *unrolled, alpha)
    exact = torch.autograd.grad(F.cross_entropy(out, val[1]), alpha)[0]

    assert torch.allclose(got, exact, rtol=1e-6, atol=1e-9), (got, exact)
    # the second-order term matters here, so first order would not pass
    first = Architect(model, weights, [model.alpha], loss_fn, order=1).gradient(train, val, xi)[0]
    assert not torch.allclose(first, exact, rtol=1e-2)
    # pt.darts' (p - n) / 2.*eps scales the finite difference by eps/2 instead of 1/(2 eps)
    eps = arch.last["eps"]
    hvp_buggy = [h * (2 * eps) * (eps / 2) for h in arch.last["hvp"]]
    buggy = arch.last["direct"][0] - xi * hvp_buggy[0]
    assert (buggy - exact).abs().max() > 1e3 * (got - exact).abs().max()
    assert not torch.allclose(buggy, exact, rtol=1e-2)


def test_order_is_checked():
    model = Tiny()
    with pytest.raises(ConfigError, match="order = 3"):
        Architect(model, [model.w1], [model.alpha], loss_fn, order=3)
