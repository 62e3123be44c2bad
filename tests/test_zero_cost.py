"""Zero-cost proxies: hand-computed values on tiny networks, determinism, broken < real networks.

The tasks here are generated (Gaussian inputs, random labels from a seeded generator): proxies
score untrained networks, so the data only has to have the right shape.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from nasforge import registry
from nasforge.core import Network, Task
from nasforge.errors import ConfigError
from nasforge.evaluators.zero_cost import (JACOB_K, PROXIES, grad_norm, jacob_cov, jacobian_score,
                                          score_architecture, snip, synflow)
from nasforge.run.rundir import build_space

REAL_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
DEAD_CELL = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def generated_task(shape, n=48, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    kind = "image" if len(shape) == 3 else "series"
    return Task("generated", kind, tuple(shape), classes, (x, y), (x[:8], y[:8]), (x[:8], y[:8]))


def two_layer(w1, w2):
    net = nn.Sequential(nn.Linear(len(w1[0]), len(w1), bias=False), nn.ReLU(),
                        nn.Linear(len(w2[0]), len(w2), bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1, dtype=torch.float32))
        net[2].weight.copy_(torch.tensor(w2, dtype=torch.float32))
    return net


def test_synflow_two_layer_linear_by_hand():
    # |W1| 1 = [3, 3.5]; R = 1^T |W2| |W1| 1 = 1*3 + 2*3.5 = 10; each layer carries the whole
    # synaptic flow R, so the score is 2R = 20 (signs and the ReLU do not matter)
    net = two_layer([[1.0, -2.0], [3.0, 0.5]], [[-1.0, 2.0]])
    assert synflow(net, (2,)) == pytest.approx(20.0)
    # three outputs: R = sum over outputs; still depth * R
    net = two_layer([[1.0, -2.0], [3.0, 0.5]], [[-1.0, 2.0], [0.5, 0.0], [0.0, -3.0]])
    r = 1 * 3 + 2 * 3.5 + 0.5 * 3 + 3 * 3.5
    assert synflow(net, (2,)) == pytest.approx(2 * r)


def test_synflow_removes_batch_norm():
    # a BatchNorm with running var 4 would halve the flow if it were kept in eval mode
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.BatchNorm1d(2), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
        net[2].weight.copy_(torch.tensor([[-1.0, 2.0]]))
        net[1].running_var.fill_(4.0)
    assert synflow(net, (2,)) == pytest.approx(20.0)


def _ce_grad(w, x, y):
    """Gradient of mean cross-entropy of logits x @ w.T by hand (numpy)."""
    logits = x @ w.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return p.T @ x / len(y)


def test_snip_and_grad_norm_of_a_linear_classifier_by_hand():
    w = np.array([[0.5, -1.0, 0.25], [1.5, 0.0, -0.5]])
    x = np.array([[1.0, 2.0, -1.0], [0.5, -0.5, 2.0], [-1.0, 1.0, 0.0]])
    y = np.array([0, 1, 1])
    net = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor(w, dtype=torch.float32))
    g = _ce_grad(w, x, y)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    assert snip(net, xt, yt) == pytest.approx(np.abs(g * w).sum(), rel=1e-5)
    assert grad_norm(net, xt, yt) == pytest.approx(np.linalg.norm(g), rel=1e-5)


def test_grad_norm_sums_layer_norms():
    net = two_layer([[1.0, -2.0], [3.0, 0.5]], [[-1.0, 2.0], [0.5, 1.0]])
    x, y = torch.tensor([[1.0, 1.0], [2.0, -1.0]]), torch.tensor([0, 1])
    loss = nn.functional.cross_entropy(net(x), y)
    g1, g2 = torch.autograd.grad(loss, [net[0].weight, net[2].weight])
    assert grad_norm(net, x, y) == pytest.approx(float(g1.norm() + g2.norm()), rel=1e-6)


def test_jacobian_score_known_values():
    n = 4
    # perfectly correlated Jacobians: eigenvalues n, 0, 0, 0
    worst = -(math.log(n + JACOB_K) + 1 / (n + JACOB_K) + (n - 1) * (math.log(JACOB_K) + 1 / JACOB_K))
    same = np.tile([1.0, 2.0, 3.0], (n, 1))
    assert jacobian_score(same) == pytest.approx(worst)
    # uncorrelated (orthogonal, zero-mean rows): identity correlation, eigenvalues 1
    rows = np.array([[1, -1, 0, 0, 0, 0, 0, 0], [0, 0, 1, -1, 0, 0, 0, 0],
                     [0, 0, 0, 0, 1, -1, 0, 0], [0, 0, 0, 0, 0, 0, 1, -1]], dtype=float)
    best = -n * (math.log(1 + JACOB_K) + 1 / (1 + JACOB_K))
    assert jacobian_score(rows) == pytest.approx(best)
    # a network that ignores its input: constant (zero) Jacobians count as the worst
    assert jacobian_score(np.zeros((n, 5))) == pytest.approx(worst)


def test_jacob_cov_of_networks():
    class Half(nn.Module):  # f(x) = |x|^2 / 2, so each Jacobian is the input itself
        def forward(self, x):
            return (x ** 2).sum(1, keepdim=True) / 2

    rows = torch.tensor([[1, -1, 0, 0], [0, 0, 1, -1], [3, 0, 0, -3]], dtype=torch.float32)
    assert jacob_cov(Half(), rows) == pytest.approx(jacobian_score(rows.numpy()))
    # a linear network has the same Jacobian for every input: the worst score
    lin = nn.Linear(4, 3)
    assert jacob_cov(lin, rows) == pytest.approx(jacobian_score(np.ones((3, 4)) * [1, 2, 3, 4]))


@pytest.fixture(scope="module")
def nb201_case():
    space = registry.create("spaces", "nb201", channels=4, cells_per_stage=1)
    return space, generated_task((3, 8, 8))


def test_dead_cell_ranks_below_real_cell(nb201_case):
    space, task = nb201_case
    real = score_architecture(space, space.parse(REAL_CELL), task, seed=3, batch_size=16)
    dead = score_architecture(space, space.parse(DEAD_CELL), task, seed=3, batch_size=16)
    for proxy in PROXIES:
        assert dead[proxy][0] < real[proxy][0], (proxy, dead[proxy], real[proxy])
    assert dead["synflow"][0] == 0.0 and dead["snip"][0] == 0.0 and real["synflow"][0] > 0


def test_deterministic_given_seed(nb201_case):
    space, task = nb201_case
    arch = space.parse(REAL_CELL)
    a = score_architecture(space, arch, task, seed=5, batch_size=16)
    b = score_architecture(space, arch, task, seed=5, batch_size=16)
    c = score_architecture(space, arch, task, seed=6, batch_size=16)
    state = torch.random.get_rng_state()
    for proxy in PROXIES:
        assert a[proxy][0] == b[proxy][0]
        assert a[proxy][0] != c[proxy][0]  # another initialisation (and minibatch)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


@pytest.mark.parametrize("space_name,shape", [("chain", (1, 24)), ("darts", (2, 16)),
                                              ("chain", (1, 8, 8))])
def test_series_and_image_spaces(space_name, shape):
    task = generated_task(shape)
    options = {"C": 4, "layers": 2} if space_name == "darts" else {}
    space = build_space(space_name, options, task)
    arch = space.sample(np.random.default_rng(1))
    scores = score_architecture(space, arch, task, seed=0, batch_size=8)
    for proxy, (value, seconds) in scores.items():
        assert math.isfinite(value) and seconds >= 0, (proxy, value)
    assert scores["synflow"][0] > 0 and scores["grad_norm"][0] > 0


def test_evaluator_reports_score_and_refuses_bad_options(nb201_case):
    space, task = nb201_case
    ev = registry.create("evaluators", "zc", proxy="snip", batch_size=16)
    res = ev.evaluate(space.parse(REAL_CELL), space, task, seed=3)
    assert res.status == "ok" and res.metrics["zc"] == res.metrics["snip"] > 0
    assert set(res.metrics) | set(res.cost) == ev.metrics()
    direct = score_architecture(space, space.parse(REAL_CELL), task, seed=3, proxies=["snip"],
                                batch_size=16)
    assert res.metrics["snip"] == direct["snip"][0]
    with pytest.raises(ConfigError, match="'fisher'"):
        registry.create("evaluators", "zc", proxy="fisher")
    with pytest.raises(ConfigError, match="batch_size"):
        registry.create("evaluators", "zc", batch_size=1)
    # an architecture the task cannot hold fails the trial with its reason, no exception
    series = generated_task((1, 16))
    bad = ev.evaluate(space.parse(REAL_CELL), space, series, seed=0)
    assert bad.status == "failed" and "image" in bad.reason


def test_network_without_batch_norm_is_unchanged_by_removal():
    net = Network(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten()),
                  nn.Linear(2 * 6 * 6, 3))
    from nasforge.evaluators.zero_cost import remove_batch_norm
    remove_batch_norm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert isinstance(net.encoder[1], nn.Identity)
