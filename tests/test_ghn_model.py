"""The graph hypernetwork on hand-built graphs: decoder shapes, normalisation, virtual edges,
the level-batched GNN against a node-by-node reference, gradients, save and load."""

import math

import pytest
import torch

from nasforge.errors import ConfigError
from nasforge.ghn.model import (GHN, GraphTensors, ParamRequest, canonical4, fan_in_beta, load,
                                normalize_param, tile_crop, variant_config)

PRIMS = ("input", "conv", "bn", "sum", "linear")


def hand_graph() -> GraphTensors:
    """input -> conv1 -> bn -> conv2 -> sum -> linear, with a skip conv1 -> sum."""
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (1, 4), (4, 5)]
    adj = torch.zeros(6, 6, dtype=torch.bool)
    for u, v in edges:
        adj[u, v] = True
    params = [ParamRequest(1, "c1.weight", (16, 3, 3, 3), "weight"),
              ParamRequest(2, "bn.weight", (16,), "norm_weight"),
              ParamRequest(2, "bn.bias", (16,), "norm_bias"),
              ParamRequest(3, "c2.weight", (130, 16, 5, 5), "weight"),
              ParamRequest(3, "c2.bias", (130,), "bias"),
              ParamRequest(5, "fc.weight", (10, 130), "weight"),
              ParamRequest(5, "fc.bias", (10,), "bias")]
    shapes = [[0, 0, 0, 0], [16, 3, 3, 3], [16, 0, 0, 0], [130, 16, 5, 5], [0, 0, 0, 0],
              [10, 130, 1, 1]]
    return GraphTensors(ops=["input", "conv", "bn", "conv", "sum", "linear"], shapes=shapes,
                        adj=adj, params=params)


def make(variant="ghn2", **kw) -> GHN:
    torch.manual_seed(0)  # test-only: fixes the GHN's random init
    return GHN(variant_config(variant, primitives=PRIMS, **kw))


def test_tile_crop_repeats_then_crops():
    x = torch.arange(6.).view(2, 3)
    y = tile_crop(x, (5, 4))
    assert y.shape == (5, 4)
    assert y[4, 3].item() == x[0, 0].item()  # row 4 = row 0, column 3 = column 0
    assert torch.equal(y[2:4, :3], x)
    assert torch.equal(tile_crop(x, (1, 2)), x[:1, :2])


@pytest.mark.parametrize("shape", [(3, 5, 7, 7), (130, 70, 3, 3), (7, 1, 13, 13), (17, 9),
                                   (5, 3, 4), (4, 2, 1, 3), (2, 3, 3, 3, 3)])
def test_decoder_emits_any_shape_tiled_and_sliced(shape):
    ghn = make("ghn1")  # no normalisation: raw decoder output
    adj = torch.zeros(2, 2, dtype=torch.bool)
    adj[0, 1] = True
    g = GraphTensors(["input", "conv"], [[0, 0, 0, 0], list(canonical4(shape))], adj,
                     [ParamRequest(1, "w", shape, "weight"), ParamRequest(1, "b", (shape[0],), "bias"),
                      ParamRequest(1, "s", (), "other")])
    out = ghn.predict([g])[0]
    assert tuple(out["w"].shape) == shape and out["b"].shape == (shape[0],) and out["s"].shape == ()
    w4 = out["w"].reshape(canonical4(shape))
    if shape[0] > 64:  # tiled along c_out
        assert torch.equal(w4[64:64 + min(64, shape[0] - 64)], w4[:min(64, shape[0] - 64)])
    if len(shape) == 4 and shape[2] > 11:  # kernels above the maximum are tiled too
        assert torch.equal(w4[:, :, 11:], w4[:, :, :shape[2] - 11])


def test_decoder_slices_the_centre_of_the_kernel():
    ghn = make("ghn1")
    h = torch.randn(2, ghn.config.hid)
    big = ghn.decoder.conv(h, 5, 5)
    small = ghn.decoder.conv(h, 3, 3)
    full = ghn.decoder.conv(h, 11, 11)
    assert big.shape == (2, 64, 64, 5, 5)
    torch.testing.assert_close(big[..., 1:4, 1:4], small)
    torch.testing.assert_close(full[..., 3:8, 3:8], big)


def test_normalisation_formulas_on_known_inputs():
    ones = torch.ones
    assert fan_in_beta((4, 2, 3, 3)) == (18, 2.0)
    torch.testing.assert_close(normalize_param(ones(4, 2, 3, 3), "weight"),
                               ones(4, 2, 3, 3) * math.sqrt(2 / 18))
    torch.testing.assert_close(normalize_param(ones(4, 1, 3, 3), "weight"),  # depthwise: beta 1
                               ones(4, 1, 3, 3) * math.sqrt(1 / 9))
    torch.testing.assert_close(normalize_param(ones(4, 2, 1, 3), "weight"),  # k_h < k_w: beta 1
                               ones(4, 2, 1, 3) * math.sqrt(1 / 6))
    torch.testing.assert_close(normalize_param(ones(10, 32), "weight"), ones(10, 32) / 4)
    w = torch.tensor([0.0, 2.0, -100.0])
    torch.testing.assert_close(normalize_param(w, "norm_weight"),
                               torch.tensor([1.0, 2 / (1 + math.exp(-1)), 0.0]))
    torch.testing.assert_close(normalize_param(torch.tensor([5.0, -5.0]), "bias"),
                               torch.tensor([math.tanh(1.0), -math.tanh(1.0)]))
    torch.testing.assert_close(normalize_param(torch.tensor([5.0]), "norm_bias"),
                               torch.tensor([math.tanh(1.0)]))
    pe = torch.full((1, 4, 8), 3.0)
    assert torch.equal(normalize_param(pe, "pos_enc"), pe)


def test_ghn2_output_is_normalised_and_ghn1_is_not():
    g = hand_graph()
    p2 = make("ghn2").predict([g])[0]
    assert p2["bn.weight"].min() >= 0 and p2["bn.weight"].max() <= 2
    assert p2["c2.bias"].abs().max() <= 1
    # fan-in scaling keeps conv weights small: |w| <= max|raw| * sqrt(2 / 400)
    assert p2["c2.weight"].abs().max() < 1.0
    p1 = make("ghn1").predict([g])[0]
    assert set(p1) == set(p2) == {p.name for p in g.params}


def test_virtual_edge_weights_on_a_hand_graph():
    g = hand_graph()
    d = g.distances(50)
    assert d[0, 5].item() == 3 and d[1, 4].item() == 1 and d[2, 4].item() == 2 and d[5, 0] == 0
    ghn = make("ghn2")
    plan, _ = ghn._plan([g])
    ve = plan.ve_in  # ve[v, u] = 1 / s(u, v)
    assert ve[5, 0].item() == pytest.approx(1 / 3)
    assert ve[4, 2].item() == pytest.approx(1 / 2)
    assert ve[4, 1].item() == pytest.approx(1.0)  # the mask includes 1-hop edges
    assert ve[0, 5].item() == 0 and ve[3, 3].item() == 0
    cut = make("ghn2", ve_cutoff=2)._plan([g])[0].ve_in
    assert cut[5, 0].item() == 0 and cut[5, 1].item() == pytest.approx(1 / 2)
    assert make("ghn1")._plan([g])[0].ve_in is None


@pytest.mark.parametrize("variant", ["ghn2", "ghn1"])
def test_level_batched_gnn_equals_node_by_node_reference(variant):
    ghn = make(variant)
    graphs = [hand_graph(), hand_graph()]
    graphs[1].adj[0, 4] = True  # a second, different graph in the same meta-batch
    x = ghn.node_features(graphs)
    plan, _ = ghn._plan(graphs)
    assert len(plan.fwd_levels) < x.shape[0]  # really batched
    fast = ghn.gnn(x, plan)
    slow = ghn.gnn.forward_naive(x, plan)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(fast[:6], fast[6:])  # the extra edge changed the second graph


def test_inference_path_equals_the_differentiable_one_and_levels_are_longest_paths():
    ghn = make("ghn2")
    graphs = [hand_graph(), hand_graph()]
    graphs[1].adj[0, 4] = True
    with torch.no_grad():  # in-place updates
        fast = ghn.predict(graphs)
    slow = ghn.predict(graphs)  # out-of-place, differentiable
    for a, b in zip(fast, slow):
        assert set(a) == set(b)
        for k in a:
            torch.testing.assert_close(a[k], b[k].detach())
    g = graphs[1]
    n = g.num_nodes
    want = [0] * n  # longest path from a source, by brute force over the edges
    for _ in range(n):
        for u in range(n):
            for v in range(n):
                if g.adj[u, v]:
                    want[v] = max(want[v], want[u] + 1)
    assert g.levels().tolist() == want


def test_mlp_variant_has_no_message_passing():
    ghn = make("mlp")
    g1, g2 = hand_graph(), hand_graph()
    g2.adj[0, 4] = True
    a, b = ghn.embed([g1]), ghn.embed([g2])
    torch.testing.assert_close(a, b)  # edges do not matter
    c = make("ghn2")
    assert not torch.allclose(c.embed([g1]), c.embed([g2]))


def test_gradient_reaches_ghn_weights():
    ghn = make("ghn2")
    out = ghn.predict([hand_graph()])[0]
    loss = sum((t ** 2).sum() for t in out.values())
    loss.backward()
    for name in ("op_embed.weight", "shape_enc.channels.weight", "gnn.gru.weight_ih",
                 "gnn.mlp_ve.0.weight", "ln.weight", "decoder.fc.weight", "decoder.conv2.weight",
                 "decoder.head_1d.0.weight", "decoder.class_weight.weight",
                 "decoder.class_bias.weight"):
        grad = dict(ghn.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    ghn = make("ghn2", num_classes=10, input_shape=(1, 8, 8))
    path = ghn.save(tmp_path / "g.pt")
    again = load(path)
    assert again.config == ghn.config
    a, b = ghn.predict([hand_graph()])[0], again.predict([hand_graph()])[0]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not a nasforge GHN file"):
        load(tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.pt")


def test_unknown_variant_is_refused():
    with pytest.raises(ConfigError, match="ghn3"):
        variant_config("ghn3")


def test_decoder_computes_only_the_kept_channels_exactly():
    ghn = make("ghn1")
    h = torch.randn(3, ghn.config.hid)
    full = ghn.decoder.conv(h, 3, 3)
    part = ghn.decoder.conv(h, 3, 3, 5, 1)
    assert part.shape == (3, 5, 1, 3, 3)
    torch.testing.assert_close(part, full[:, :5, :1])


class SmallRes(torch.nn.Module):
    """A residual CNN with batch norm written for the tests."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        h = torch.relu(self.bn(self.stem(x)))
        h = h + self.dw(torch.relu(self.conv(h)))
        return self.fc(h.mean((2, 3)))


def test_call_fills_every_parameter_and_estimates_bn_statistics():
    ghn = GHN(variant_config("ghn2", input_shape=(1, 8, 8), num_classes=10))
    model = SmallRes()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = ghn.graph_of(model)
    expected = ghn.predict([g])[0]
    assert set(expected) == {k for k, _ in model.named_parameters()}
    x = torch.randn(64, 1, 8, 8) * 2 + 1  # test data: generated
    assert ghn(model, bn_data=x) is model
    for name, p in model.named_parameters():
        assert not torch.equal(p, before[name]), name
        torch.testing.assert_close(p.data, expected[name].detach())
    assert model.training  # the mode is kept
    with torch.no_grad():  # running statistics = the batch's statistics of the stem output
        stem = model.stem(x)
    torch.testing.assert_close(model.bn.running_mean, stem.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert model.bn.num_batches_tracked.item() == 1


def test_gradient_reaches_ghn_through_a_functional_forward():
    from nasforge.ghn.train import predicted_forward

    ghn = GHN(variant_config("ghn2", input_shape=(1, 8, 8), num_classes=10))
    model = SmallRes()
    params = ghn.predict_params(model)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))  # test data: generated
    loss = torch.nn.functional.cross_entropy(predicted_forward(model, params, x), y)
    loss.backward()
    assert ghn.op_embed.weight.grad.abs().sum() > 0
    assert ghn.gnn.gru.weight_hh.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())  # the module's own weights unused


def test_cached_decoder_rows_give_the_same_numbers_and_follow_weight_changes():
    """The no-grad decoder caches its weight slices; predictions must be bitwise those of the
    uncached (differentiable) path, and an in-place weight change must not be missed."""
    ghn = make("ghn2")
    graphs = [hand_graph()]
    with torch.no_grad():
        cached = ghn.predict(graphs)[0]
        again = ghn.predict(graphs)[0]  # second call: served from the cache
    plain = ghn.predict(graphs)[0]  # gradients on: no cache
    for k in plain:
        assert torch.equal(cached[k], plain[k].detach()), k
        assert torch.equal(again[k], plain[k].detach()), k
    with torch.no_grad():
        ghn.decoder.conv2.weight.mul_(2.0)  # like an optimizer step: in place
        changed = ghn.predict(graphs)[0]
    fresh = ghn.predict(graphs)[0]
    assert not torch.equal(changed["c2.weight"], cached["c2.weight"])
    for k in fresh:
        assert torch.equal(changed[k], fresh[k].detach()), k


def test_write_params_copies_exactly_and_names_missing_parameters():
    from nasforge.errors import NasforgeError
    from nasforge.ghn.model import write_params

    model = SmallRes()
    gen = torch.Generator().manual_seed(3)
    params = {k: torch.randn(v.numel(), generator=gen, dtype=torch.float64)  # flat, other dtype
              for k, v in model.named_parameters()}
    write_params(model, params)
    for k, p in model.named_parameters():
        assert torch.equal(p.data, params[k].float().reshape(p.shape)), k
    params.pop("fc.bias")
    with pytest.raises(NasforgeError, match="fc.bias"):
        write_params(model, params)
