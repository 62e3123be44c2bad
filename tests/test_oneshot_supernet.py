"""The DARTS supernet, its architecture parameters and genotype derivation (nasforge.oneshot)."""

import pytest
import torch

from nasforge.errors import ConfigError
from nasforge.oneshot.derive import derive, nodes_for_edges
from nasforge.oneshot.supernet import Alphas, SuperNet, cell_edges
from nasforge.spaces.darts import PRIMITIVES, DartsSpace, build_network, parse_genotype
from nasforge.training import seeded_module

GENO = parse_genotype(
    "Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_3x3', 2), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('dil_conv_5x5', 3), ('sep_conv_5x5', 4), "
    "('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('skip_connect', 0), "
    "('sep_conv_3x3', 1), ('dil_conv_3x3', 2), ('skip_connect', 1), ('sep_conv_3x3', 3), "
    "('skip_connect', 0), ('skip_connect', 4), ('dil_conv_3x3', 1)], reduce_concat=[2, 3, 4, 5])")


def tiny(dims=2, ops=PRIMITIVES, seed=0):
    return seeded_module(lambda: SuperNet(list(ops), 4, 3, 10, 1 if dims == 2 else 2, dims=dims), seed)


@pytest.fixture(scope="module")
def net2d():
    return tiny()  # building a supernet of small modules takes a few seconds: once per module


def test_edges_and_shapes_2d_and_1d(net2d):
    assert cell_edges(4)[:5] == [(2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert len(cell_edges(4)) == 14 and nodes_for_edges(14) == 4
    for dims, x in ((2, torch.randn(3, 1, 8, 8)), (1, torch.randn(3, 2, 20))):
        net = net2d if dims == 2 else SuperNet(list(PRIMITIVES), 2, 3, 10, 2, dims=1, n_nodes=2)
        alphas = Alphas.like(net, torch.Generator().manual_seed(0))
        assert net.edges == cell_edges(net.n_nodes) and net.op_names == PRIMITIVES
        out = net(x, alphas.softmax())
        assert out.shape == (3, 10)
        per_sample = {t: w.expand(3, -1, -1) for t, w in alphas.softmax().items()}
        assert torch.allclose(net(x, per_sample), out, atol=1e-5)  # [B, E, K] = shared [E, K]
        net.zero_grad()
        out.sum().backward()
        assert alphas.normal.grad is not None and alphas.normal.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match=r"expected \[14, 8\]"):
        net2d(x, {"normal": torch.ones(3, 8), "reduce": torch.ones(14, 8)})


def test_zero_weights_are_not_computed(net2d):
    # an operation ran when its batch norms counted a batch (pools, strided skips and
    # convolutions have them; ``none`` is never computed and the identity has no state)
    net = net2d

    def counts():
        return {(i, e, k): sum(int(b) for name, b in op.named_buffers() if "num_batches" in name)
                for i, cell in enumerate(net.cells) for e, edge in enumerate(cell.edges)
                for k, op in enumerate(edge.ops)}

    def ran(weights):
        before = counts()
        out = net(torch.randn(2, 1, 8, 8), weights)
        return out, {key for key, n in counts().items() if n != before[key]}

    def expected(weights):
        nonzero = {t: (w != 0).reshape(-1, *w.shape[-2:]).any(0) for t, w in weights.items()}
        return {(i, e, k) for i, cell in enumerate(net.cells)
                for e, k in torch.nonzero(nonzero["reduce" if cell.reduction else "normal"]).tolist()
                if any(True for name, _ in cell.edges[e].ops[k].named_buffers() if "num_batches" in name)}

    net.train()
    w = net.weights_for(GENO)
    _, computed = ran(w)
    # 3 cells (normal, reduce, reduce): 8 edges each, one operation per edge; the stride-1 skips
    # have no state (3 in the normal cell, 1 in each reduce cell; skips from the inputs of a
    # reduce cell are strided)
    assert computed == expected(w) and len(computed) == 3 * 8 - 3 - 2
    # per-sample weights: an operation runs when any sample uses it
    per = {t: torch.stack([w[t], torch.roll(w[t], 1, dims=1)]) for t in w}
    _, computed = ran(per)
    assert computed == expected(per) and len(computed) > 3 * 8
    # straight-through hard weights keep exact zeros, so GDAS computes one op per edge
    alphas = Alphas.like(net, torch.Generator().manual_seed(1))
    hard = alphas.gumbel(1.0, hard=True, generator=torch.Generator().manual_seed(2))
    assert all(int((h != 0).sum()) == 14 for h in hard.values())
    out, computed = ran(hard)
    assert computed == expected(hard)
    out.sum().backward()
    assert alphas.normal.grad.abs().sum() > 0 and alphas.reduce.grad.abs().sum() > 0
    net.zero_grad()


def test_weights_for_reproduces_the_discrete_network():
    net = tiny(ops=("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"))
    disc = build_network(GENO, (1, 8, 8), 10, C=4, layers=3)
    # copy the supernet's weights into the discrete network (its BNs are affine, scale 1 shift 0)
    disc.encoder.stem.load_state_dict(net.stem.state_dict())
    for sc, dc in zip(net.cells, disc.encoder.cells):
        dc.preprocess0.load_state_dict(sc.preprocess0.state_dict(), strict=False)
        dc.preprocess1.load_state_dict(sc.preprocess1.state_dict(), strict=False)
        nodes, _ = GENO.cell(sc.reduction)
        for j, node in enumerate(nodes):
            for slot, (op, src) in enumerate(node):
                e = net.edges.index((j + 2, src))
                dc.ops[j][slot].load_state_dict(sc.edges[e].ops[net.op_names.index(op)].state_dict(),
                                                strict=False)
    disc.head.load_state_dict(net.classifier.state_dict())
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(net(x, net.weights_for(GENO)), disc(x), atol=1e-5)


def test_op_param_counts_match_the_derived_network(net2d):
    net = net2d
    counts = net.op_param_counts()
    assert set(counts) == {"normal", "reduce"} and counts["normal"].shape == (14, 8)
    none, sep3 = PRIMITIVES.index("none"), PRIMITIVES.index("sep_conv_3x3")
    assert counts["normal"][:, none].sum() == 0
    # normal cell: C=4 channels; sep_conv_3x3 = 2 x (3*3*4 + 4*4 + 2*4) = 120
    assert counts["normal"][0, sep3] == 120
    # the expected count of one-hot weights is the parameters of the genotype's cells
    w = net.weights_for(GENO)
    expected = sum(float((w[t] * counts[t]).sum()) for t in counts)
    disc = build_network(GENO, (1, 8, 8), 10, C=4, layers=3)
    cell_ops = sum(p.numel() for cell in disc.encoder.cells for p in cell.ops.parameters())
    assert expected == cell_ops


def test_derive_known_genotypes(net2d):
    ops = list(PRIMITIVES)
    space = DartsSpace(C=4, layers=3)
    net = net2d
    # one-hot α of a genotype derive back to it (edge order aside: strongest first, ties by input)
    for geno in (GENO, space.parse("DARTS_V2")):
        w = net.weights_for(geno)
        alphas = {t: 5 * v for t, v in w.items()}
        got = derive(alphas, ops, "top2")
        assert space.canonical_key(got) == space.canonical_key(geno)
    # hand-made α: node 2 prefers input 1 (sep3 strong) over input 0; none dominates edge (3, 0)
    a = torch.zeros(14, 8)
    a[0, ops.index("max_pool_3x3")] = 1.0
    a[1, ops.index("sep_conv_3x3")] = 2.0
    a[2, ops.index("none")] = 9.0
    a[2, ops.index("dil_conv_5x5")] = 3.0
    a[3, ops.index("skip_connect")] = 1.0
    a[4, ops.index("sep_conv_5x5")] = 0.5
    geno = derive({"normal": a, "reduce": a}, ops, "top2")
    assert geno.normal[0] == (("sep_conv_3x3", 1), ("max_pool_3x3", 0))
    # none is ignored for ranking, but it dilutes the softmax: edge (3,0) is weaker than (3,1)
    assert geno.normal[1] == (("skip_connect", 1), ("sep_conv_5x5", 2))
    argmax = derive({"normal": a, "reduce": a}, ops, "argmax")
    # edge (3, 0) chose none and is dropped; edges of all-zero rows are ties -> first op (none)
    assert argmax.normal[0] == (("max_pool_3x3", 0), ("sep_conv_3x3", 1))
    assert argmax.normal[1] == (("skip_connect", 1), ("sep_conv_5x5", 2))
    assert argmax.normal[2] == (("none", 0),)  # every edge none: one zero edge
    again = space.parse(str(argmax))
    assert again == argmax and str(again).startswith("Genotype(normal=[[(")
    assert space.parse(argmax.to_json()) == argmax
    build_network(argmax, (1, 8, 8), 10, C=4, layers=3)(torch.randn(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="mode"):
        derive({"normal": a, "reduce": a}, ops, "top3")
    with pytest.raises(ConfigError, match="13 edges"):
        derive({"normal": a[:13], "reduce": a[:13]}, ops)


def test_alphas_seeded_and_gumbel():
    a = seeded_module(lambda: Alphas(14, 8), 3)
    b = seeded_module(lambda: Alphas(14, 8), 3)
    assert torch.equal(a.normal, b.normal) and 0 < a.normal.abs().max() < 1e-2
    g1 = a.gumbel(0.5, hard=False, generator=torch.Generator().manual_seed(0), samples=5)
    g2 = a.gumbel(0.5, hard=False, generator=torch.Generator().manual_seed(0), samples=5)
    assert g1["normal"].shape == (5, 14, 8) and torch.equal(g1["normal"], g2["normal"])
    assert torch.allclose(g1["normal"].sum(-1), torch.ones(5, 14))
    # Gumbel-max: the hard sample is operation k with probability softmax(α)_k, at any temperature
    with torch.no_grad():
        a.normal.zero_()
        a.normal[:, 4] = 4.0
    p4 = torch.softmax(a.normal[0], -1)[4].item()  # e^4 / (e^4 + 7) = 0.886
    for tau in (0.1, 10.0):
        hard = a.gumbel(tau, hard=True, generator=torch.Generator().manual_seed(0), samples=200)
        assert abs((hard["normal"].argmax(-1) == 4).float().mean().item() - p4) < 0.03
