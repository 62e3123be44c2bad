"""GHN graphs of nn.Modules: known nodes, op types and edges of hand-written ResNet-, MobileNet-
and ViT-style modules, every parameter owned exactly once, the fx and autograd tracers agreeing,
and the networks of nasforge's spaces. (Inputs are random tensors generated here.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.core import Task
from nasforge.errors import ArchitectureError
from nasforge.ghn.graph import PRIMITIVES, Graph, build_graph


class Block(nn.Module):
    def __init__(s, cin, cout, stride):
        super().__init__()
        s.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False); s.bn1 = nn.BatchNorm2d(cout)
        s.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False); s.bn2 = nn.BatchNorm2d(cout)
        s.down = None if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    def forward(s, x):
        out = F.relu(s.bn1(s.conv1(x)))
        out = s.bn2(s.conv2(out))
        sc = x if s.down is None else s.down(x)
        return F.relu(out + sc)
class ResNet(nn.Module):
    def __init__(s, nc=10):
        super().__init__()
        s.stem = nn.Conv2d(3, 8, 3, 1, 1); s.bn = nn.BatchNorm2d(8)
        s.layer1 = Block(8, 8, 1); s.layer2 = Block(8, 16, 2)
        s.pool = nn.AdaptiveAvgPool2d(1); s.fc = nn.Linear(16+8, nc)
        s.mp = nn.MaxPool2d(2)
    def forward(s, x):
        x = F.relu(s.bn(s.stem(x)))
        a = s.layer1(x)
        b = s.layer2(a)
        z = torch.cat([s.pool(b), s.pool(s.mp(a))], 1)
        return s.fc(torch.flatten(z, 1))
class MobileNet(nn.Module):
    def __init__(s, nc=10):
        super().__init__()
        s.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        s.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False); s.bn1 = nn.BatchNorm2d(8)
        s.pw = nn.Conv2d(8, 16, 1, bias=False); s.bn2 = nn.BatchNorm2d(16)
        s.dil = nn.Conv2d(16, 16, 3, 1, 2, dilation=2, groups=16)
        s.se1 = nn.Conv2d(16, 4, 1); s.se2 = nn.Conv2d(4, 16, 1)
        s.fc = nn.Linear(16, nc)
    def forward(s, x):
        x = s.stem(x)
        y = F.relu6(s.bn2(s.pw(F.relu6(s.bn1(s.dw(x))))))
        y = s.dil(y)
        w = torch.sigmoid(s.se2(F.relu(s.se1(y.mean((2, 3), keepdim=True)))))
        y = y * w
        return s.fc(y.mean((2, 3)))
class ViT(nn.Module):
    def __init__(s, nc=10, d=16, depth=2):
        super().__init__()
        s.patch = nn.Conv2d(3, d, 4, 4)
        s.cls = nn.Parameter(torch.zeros(1, 1, d)); s.pos = nn.Parameter(torch.zeros(1, 17, d))
        s.blocks = nn.ModuleList()
        for _ in range(depth):
            s.blocks.append(nn.ModuleDict(dict(ln1=nn.LayerNorm(d), attn=nn.MultiheadAttention(d, 2, batch_first=True), ln2=nn.LayerNorm(d), fc1=nn.Linear(d, 2*d), fc2=nn.Linear(2*d, d))))
        s.norm = nn.LayerNorm(d); s.head = nn.Linear(d, nc)
    def forward(s, x):
        x = s.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([s.cls.expand(x.shape[0], -1, -1), x], 1) + s.pos
        for b in s.blocks:
            h = b["ln1"](x)
            x = x + b["attn"](h, h, h, need_weights=False)[0]
            x = x + b["fc2"](F.gelu(b["fc1"](b["ln2"](x))))
        return s.head(s.norm(x)[:, 0])


def _owned_once(model: nn.Module, g: Graph) -> None:
    names = [p.name for n in g.nodes for p in n.params]
    assert len(names) == len(set(names))
    assert set(names) == {n for n, _ in model.named_parameters()}
    assert g.n_params == sum(p.numel() for p in model.parameters())
    shapes = dict(model.named_parameters())
    for n in g.nodes:
        for p in n.params:
            assert tuple(shapes[p.name].shape) == p.shape


def _ops(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


def test_resnet_style_nodes_and_edges():
    model = ResNet()
    g = build_graph(model, (3, 16, 16))
    assert g.meta["method"] == "autograd"
    assert _ops(g) == ["input", "conv", "bias", "bn", "conv", "bn", "conv", "bn", "sum", "conv",
                       "bn", "conv", "bn", "conv", "bn", "sum", "glob_avg", "max_pool", "glob_avg",
                       "concat", "linear", "bias"]
    assert g.nodes[1].name == "stem.weight" and g.nodes[2].name == "stem.bias"
    assert g.nodes[3].name == "bn" and [p.kind for p in g.nodes[3].params] == ["norm_weight", "norm_bias"]
    assert g.predecessors(8) == [3, 7]  # identity shortcut
    assert g.predecessors(13) == [8] and g.predecessors(15) == [12, 14]  # projection shortcut
    assert g.predecessors(19) == [16, 18] and g.successors(8) == [9, 13, 17]
    assert int(g.adj.sum()) == 24
    _owned_once(model, g)
    assert g.op_ids()[:3].tolist() == [PRIMITIVES.index("input"), PRIMITIVES.index("conv"),
                                       PRIMITIVES.index("bias")]
    assert g.shapes()[1].tolist() == [8, 3, 3, 3] and g.shapes()[20].tolist() == [10, 24, 1, 1]
    assert g.shapes()[3].tolist() == [8, 0, 0, 0] and g.shapes()[8].tolist() == [0, 0, 0, 0]
    assert g.param_nodes() == [i for i, op in enumerate(_ops(g)) if op in
                               ("conv", "bias", "bn", "linear")]


def test_fx_and_autograd_agree():
    for model in (ResNet(), MobileNet(), ViT()):
        a = build_graph(model, (3, 16, 16), method="fx")
        b = build_graph(model, (3, 16, 16), method="autograd")
        assert a.meta["method"] == "fx" and b.meta["method"] == "autograd"
        assert a == b, type(model).__name__


def test_graph_inside_a_callers_inference_mode_is_the_autograd_graph():
    """Inside torch.inference_mode() autograd records nothing; the graph is built outside it
    (before, auto fell back to fx without a word), also from an inference-tensor input."""
    model = ResNet()
    ref = build_graph(model, (3, 16, 16))
    with torch.inference_mode():
        inside = build_graph(model, (3, 16, 16))
        from_tensor = build_graph(model, torch.randn(1, 3, 16, 16))
    assert inside.meta["method"] == from_tensor.meta["method"] == "autograd"
    assert inside == ref and from_tensor == ref


def test_mobilenet_style_depthwise_dilated_and_squeeze():
    model = MobileNet()
    g = build_graph(model, (3, 16, 16), method="autograd")
    by_name = {n.name: n for n in g.nodes}
    assert by_name["dw.weight"].op == "sep_conv" and by_name["dw.weight"].attrs["groups"] == 8
    assert by_name["dil.weight"].op == "dil_conv" and by_name["pw.weight"].op == "conv"
    assert g.op_counts() == {"input": 1, "conv": 4, "bn": 3, "sep_conv": 1, "dil_conv": 1,
                             "bias": 4, "cse": 1, "glob_avg": 1, "linear": 1}
    cse = _ops(g).index("cse")
    assert g.nodes[g.predecessors(cse)[0]].name == "dil.bias"
    # the gate y * w is rewired: global pooling reads the block output and the excitation
    pool = _ops(g).index("glob_avg")
    assert [g.nodes[i].name for i in g.predecessors(pool)] == ["dil.bias", "se2.bias"]
    _owned_once(model, g)
    assert g.shapes()[_ops(g).index("sep_conv")].tolist() == [8, 1, 3, 3]


def test_vit_style_attention_tokens_and_positions():
    model = ViT()
    g = build_graph(model, (3, 16, 16))
    assert g.op_counts()["msa"] == 2 and g.op_counts()["ln"] == 5 and g.op_counts()["pos_enc"] == 2
    names = [n.name for n in g.nodes]
    cls, pos, cat = names.index("cls"), names.index("pos"), _ops(g).index("concat")
    assert g.predecessors(cls) == [] and g.predecessors(cat) == [names.index("patch.bias"), cls]
    assert g.predecessors(pos) == [cat]
    msa = _ops(g).index("msa")
    assert names[msa - 1] == "blocks.0.attn.in_proj_bias"
    assert names[msa + 1] == "blocks.0.attn.out_proj.weight"
    assert g.nodes[names.index("blocks.0.attn.in_proj_weight")].op == "linear"
    assert g.shapes()[pos].tolist() == [17, 16, 0, 0]
    _owned_once(model, g)


class HandAttention(nn.Module):
    """Attention written out: softmax(q k^T) v (no nn.MultiheadAttention)."""

    def __init__(self, d=8):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        x = x.flatten(2).transpose(1, 2)
        a = (self.q(x) @ self.k(x).transpose(1, 2) / 8 ** 0.5).softmax(-1)
        return self.o(a @ self.v(x)).mean(1)


def test_hand_written_attention_is_msa():
    g = build_graph(HandAttention(), (8, 4, 4), method="autograd")
    assert g.op_counts()["msa"] == 1
    msa = _ops(g).index("msa")
    assert sorted(g.nodes[i].name for i in g.predecessors(msa)) == ["k.bias", "q.bias"]
    assert build_graph(HandAttention(), (8, 4, 4), method="fx") == g


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3, bias=False)

    def forward(self, x):
        if x.sum() > -1e9:  # fx cannot trace a branch on a tensor's value
            return self.a(x) + self.b(x)
        return self.a(x)


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.a(x) + self.b(x).detach()  # autograd never sees self.b


def test_auto_falls_back_to_fx_for_a_detached_branch():
    g = build_graph(Detached(), (4,))
    assert g.meta["method"] == "fx" and _ops(g) == ["input", "linear", "bias", "linear", "bias", "sum"]
    with pytest.raises(ArchitectureError, match=r"b\.weight"):
        build_graph(Detached(), (4,), method="autograd")


def test_autograd_when_fx_cannot_trace():
    model = DataDependent()
    g = build_graph(model, (3, 8, 8))
    assert g.meta["method"] == "autograd"
    assert _ops(g) == ["input", "conv", "bias", "conv", "sum"]
    assert g.predecessors(4) == [2, 3]
    with pytest.raises(ArchitectureError, match="torch.fx cannot trace DataDependent"):
        build_graph(model, (3, 8, 8), method="fx")


class WithEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.emb(x.long().clamp(0, 9)).float().mean(1) + x.float().mean(1, keepdim=True))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.fc(x))


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.extra = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x)


@pytest.mark.parametrize("method", ["fx", "autograd"])
def test_clear_errors(method):
    with pytest.raises(ArchitectureError, match="Embedding 'emb'"):
        build_graph(WithEmbedding(), torch.rand(2, 5) * 9, method=method)
    with pytest.raises(ArchitectureError, match=r"fc\.(weight|bias).*two operations"):
        build_graph(Shared(), (4,), method=method)
    with pytest.raises(ArchitectureError, match=r"extra\.weight"):
        build_graph(Unused(), (4,), method=method)
    g = build_graph(Unused(), (4,), method=method, allow_unused=True)
    assert g.meta["unused_params"] == ["extra.weight", "extra.bias"] and _ops(g) == ["input", "linear", "bias"]
    with pytest.raises(ArchitectureError, match="LSTM"):
        build_graph(nn.Sequential(nn.LSTM(4, 4)), (3, 4), method=method)


def test_model_mode_and_flags_are_restored():
    model = ResNet().train()
    model.stem.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build_graph(model, (3, 16, 16), method="autograd")
    assert model.training and not model.stem.weight.requires_grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_each_module_mode_is_restored_and_the_trace_runs_in_eval_mode():
    seen = []

    class Probe(nn.Module):  # records the mode it is called in
        def forward(self, x):
            seen.append(self.training)
            return x

    class FrozenBN(ResNet):  # overrides train(): the slow, faithful path
        def train(self, mode=True):
            super().train(mode)
            self.bn.eval()
            return self

    model = nn.Sequential(ResNet(), Probe()).train()
    model[0].bn.eval()  # a mixed model: one frozen batch norm
    g = build_graph(model, (3, 16, 16), method="autograd")
    assert seen == [False] and g.num_nodes == build_graph(ResNet(), (3, 16, 16)).num_nodes
    assert model.training and model[1].training and not model[0].bn.training and model[0].layer1.training
    frozen = FrozenBN().train()
    build_graph(frozen, (3, 16, 16), method="autograd")
    assert frozen.training and not frozen.bn.training and frozen.layer1.training
    evaluated = ResNet().eval()
    build_graph(evaluated, (3, 16, 16))
    assert not any(m.training for m in evaluated.modules())


def test_shortest_paths_known_values():
    g = build_graph(ResNet(), (3, 16, 16))
    d = g.shortest_paths()
    assert d[0, 1] == 1 and d[0, 8] == 4 and d[3, 8] == 1  # input->stem->bias->bn->(shortcut)sum
    assert d[8, 15] == 3 and d[0, 21] == 9 and d[21, 0] == 0 and d[5, 5] == 0
    assert d[8, 19] == 3  # sum -> max_pool -> glob_avg -> concat beats the layer2 branch
    cut = g.shortest_paths(cutoff=3)
    assert cut[8, 19] == 3 and cut[0, 8] == 0 and cut[0, 1] == 1
    assert ((d > 0) == (d > 0) & torch.triu(torch.ones_like(d, dtype=torch.bool), 1)).all()


def test_dict_round_trip_and_png(tmp_path):
    g = build_graph(ViT(depth=1), (3, 16, 16))
    back = Graph.from_dict(json.loads(json.dumps(g.to_dict())))
    assert back == g and torch.equal(back.shapes(), g.shapes()) and back.n_params == g.n_params
    path = g.visualize(str(tmp_path / "g.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ArchitectureError):
        Graph.from_dict({"nodes": []})


def _task(shape, kind="image"):
    x, y = torch.zeros(4, *shape), torch.zeros(4, dtype=torch.long)
    return Task("t", kind, tuple(shape), 10, (x, y), (x, y), (x, y))


def test_networks_of_the_spaces():
    from nasforge.spaces.chain import ChainSpace
    from nasforge.spaces.darts import DartsSpace, genotype
    from nasforge.spaces.nb201 import NB201Space

    space = ChainSpace(input_shape=(1, 8, 8))
    net = space.build(space.parse("[C(16,3,1,1,0), P(2,2,0,0), C(32,3,1,0,1), FC(32), SM(10)]"),
                      _task((1, 8, 8)))
    g = build_graph(net, (1, 8, 8))
    assert _ops(g) == ["input", "conv", "bias", "conv", "bias", "conv", "bias", "sum", "max_pool",
                       "conv", "bias", "linear", "bias", "linear", "bias"]
    assert g.predecessors(5) == [0] and g.predecessors(7) == [4, 6]  # 1x1 projection shortcut
    assert g.nodes[8].name == "encoder.1" and g.shapes()[11].tolist() == [32, 128, 1, 1]
    _owned_once(net, g)

    nb = NB201Space()
    net = nb.build(nb.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"),
                   _task((3, 8, 8)))
    g = build_graph(net, (3, 8, 8), method="autograd")
    _owned_once(net, g)
    assert g.op_counts()["avg_pool"] == 3 * nb.cells_per_stage + 2  # cell pools + shortcut pools

    darts = DartsSpace(C=4, layers=3)
    for shape, kind in (((3, 8, 8), "image"), ((2, 12), "series")):
        net = darts.build(genotype("DARTS"), _task(shape, kind))
        a = build_graph(net, shape, method="fx")
        b = build_graph(net, shape, method="autograd")
        assert a == b
        _owned_once(net, a)
        counts = a.op_counts()
        # DARTS_V2: 5 sep_conv edges (2 convs each) and 1 dil_conv edge per normal cell
        assert counts["sep_conv"] == 10 * 1 + 0 and counts["dil_conv"] == 1
        assert counts["max_pool"] == 5 * 2 and counts["glob_avg"] == 1
