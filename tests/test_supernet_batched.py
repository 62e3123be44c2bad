"""The supernet's batched cell computation equals the per-edge definition of DARTS's mixed edge.

``SearchCell`` computes all edges leaving a state together (composed convolution kernels, one BN
call over every edge's channels, pooling once). These tests run ``reference_forward``, the plain
per-edge, per-operation sum ``sum_k w_k * op_k(x)`` with the same modules (the DARTS code's
``MixedOp``), on a copy of the same seeded supernet and compare logits, every gradient and the BN
running statistics.
Inputs are generated random tensors.
"""

import copy

import pytest
import torch

from nasforge.oneshot.supernet import Alphas, SuperNet, reference_forward
from nasforge.spaces.darts import PRIMITIVES
from nasforge.training import seeded_module


def compare(net: SuperNet, x: torch.Tensor, make_weights, *, train: bool = True, steps: int = 1):
    """Run the batched and the reference forward/backward on two copies of ``net``; equal
    logits, gradients (network and α) and buffers, over ``steps`` steps."""
    fast, ref = net, copy.deepcopy(net)
    alphas = Alphas.like(net, torch.Generator().manual_seed(3))
    alphas_ref = copy.deepcopy(alphas)
    for step in range(steps):
        for model in (fast, ref):
            model.train(train)
            model.zero_grad()
        alphas.zero_grad()
        alphas_ref.zero_grad()
        y_fast = fast(x, make_weights(alphas, step))
        y_ref = reference_forward(ref, x, make_weights(alphas_ref, step))
        torch.testing.assert_close(y_fast, y_ref, rtol=1e-4, atol=1e-5)
        target = torch.arange(x.shape[0]) % y_fast.shape[1]
        torch.nn.functional.cross_entropy(y_fast, target).backward()
        torch.nn.functional.cross_entropy(y_ref, target).backward()
        for (name, p), p_ref in zip(fast.named_parameters(), ref.parameters()):
            assert (p.grad is None) == (p_ref.grad is None), name
            if p.grad is not None:
                torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-5, msg=name)
        for t in ("normal", "reduce"):
            torch.testing.assert_close(getattr(alphas, t).grad, getattr(alphas_ref, t).grad,
                                       rtol=1e-4, atol=1e-6)
        for (name, b), b_ref in zip(fast.named_buffers(), ref.buffers()):
            torch.testing.assert_close(b, b_ref, rtol=1e-5, atol=1e-6, msg=name)
    return fast


def softmax(alphas, step):
    return alphas.softmax()


def per_sample(batch):
    def weights(alphas, step):  # DARTS-CC: one soft Gumbel sample per row
        g = torch.Generator().manual_seed(10 + step)
        return alphas.gumbel(0.7, hard=False, generator=g, samples=batch)
    return weights


def hard(alphas, step):  # GDAS: one operation per edge, straight-through
    return alphas.gumbel(1.0, hard=True, generator=torch.Generator().manual_seed(20 + step))


def sparse_per_sample(batch):
    def weights(alphas, step):  # per-sample one-hot rows: each op runs where any row uses it
        g = torch.Generator().manual_seed(30 + step)
        return alphas.gumbel(1.0, hard=True, generator=g, samples=batch)
    return weights


@pytest.fixture(scope="module")
def net2d():
    return seeded_module(lambda: SuperNet(list(PRIMITIVES), 4, 3, 10, 1), 0)


@pytest.mark.parametrize("mode", ["softmax", "per_sample", "hard", "sparse_per_sample", "eval"])
def test_batched_cell_equals_per_edge_2d(net2d, mode):
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    weights = {"softmax": softmax, "per_sample": per_sample(4), "hard": hard,
               "sparse_per_sample": sparse_per_sample(4), "eval": softmax}[mode]
    # two steps for GDAS: the running statistics of the ops sampled in either step
    compare(copy.deepcopy(net2d), x, weights, train=mode != "eval", steps=2 if mode == "hard" else 1)


def test_batched_cell_equals_per_edge_1d_odd_length_other_ops():
    # 1-D series of odd length (strided edges round up), dense convolutions (ReLUConvBN),
    # a 7x7 separable convolution, and affine BNs in the operations' own modules
    ops = ["none", "avg_pool_3x3", "skip_connect", "conv_3x3", "sep_conv_7x7", "dil_conv_3x3"]
    net = seeded_module(lambda: SuperNet(ops, 3, 3, 5, 2, dims=1, n_nodes=3), 0)
    x = torch.randn(3, 2, 19, generator=torch.Generator().manual_seed(2))
    compare(net, x, per_sample(3))
    compare(net, x, hard)


def test_batched_cell_other_operation_modules():
    # an operation the cell does not batch (the factorised 7x7) runs module by module
    ops = ["max_pool_3x3", "conv_7x1_1x7", "sep_conv_3x3"]
    net = seeded_module(lambda: SuperNet(ops, 4, 3, 10, 1, n_nodes=2), 0)
    x = torch.randn(4, 1, 9, 9, generator=torch.Generator().manual_seed(3))
    compare(net, x, softmax)


def test_batch_norm_momentum_zero_keeps_running_statistics(net2d):
    # ENAS scores shared weights with batch statistics and momentum 0 (nasforge.oneshot.enas)
    from nasforge.oneshot.enas import batch_statistics

    net = copy.deepcopy(net2d)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    with batch_statistics(net):
        net(torch.randn(4, 1, 8, 8), Alphas.like(net).softmax())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
