"""gen.workloads: networks as operations with shapes, checked against published figures
and against torch's own output shapes."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from gen.errors import UserError
from gen.networks import MatMul
from gen.workloads import (KINDS, Operation, Workload, format_table, from_module, get_workload,
                           workload_names)

torch.set_num_threads(1)

# Published totals (multiply-accumulates of conv/linear/attention products): ResNet-50 4.09 G
# (He et al.; torchvision "4.09 GFLOPS"), MobileNetV2 300 M (Sandler et al., Table 3), DeiT-Tiny
# 1.26 G (fvcore count; the DeiT paper rounds to 1.3 G).
PUBLISHED_MACS = {"resnet50": 4.09e9, "mobilenet_v2": 300e6, "deit_tiny": 1.26e9}


def _bert_layer_macs(seq=128, d=768, ffn=3072):
    # q, k, v, output projection: 4 L D^2; FFN: 2 L D F; scores + context: 2 L^2 D
    return 4 * seq * d * d + 2 * seq * d * ffn + 2 * seq * seq * d


def _digits_vit_macs(tokens=17, d=64, ffn=128, layers=2, classes=10):
    patch = 16 * 4 * d
    layer = 4 * tokens * d * d + 2 * tokens * d * ffn + 2 * tokens * tokens * d
    return patch + layers * layer + d * classes


@pytest.mark.parametrize("name", sorted(PUBLISHED_MACS))
def test_macs_match_published(name):
    assert get_workload(name).macs == pytest.approx(PUBLISHED_MACS[name], rel=0.02)


def test_transformer_macs_match_closed_form():
    assert get_workload("bert_base_layer").macs == _bert_layer_macs()
    assert get_workload("digits_vit").macs == _digits_vit_macs()


def test_weights_match_published_parameter_counts():
    # torchvision's parameter counts minus what is not a conv/linear weight (BatchNorm gamma/beta,
    # classifier bias): every layer's weight shape must be right for these to agree exactly.
    assert get_workload("resnet50").param_bytes == 25_557_032 - 53_120 - 1000
    assert get_workload("mobilenet_v2").param_bytes == 3_504_872 - 34_112 - 1000
    # timm DeiT-Tiny: 5,717,416 parameters; minus biases, LayerNorms, cls token, position embedding
    per_layer = 576 + 192 + 768 + 192 + 4 * 192
    assert get_workload("deit_tiny").param_bytes == \
        5_717_416 - 12 * per_layer - 192 - 1000 - 2 * 192 - 192 - 197 * 192


def test_names_and_default():
    names = workload_names()
    for name in ("resnet50", "mobilenet_v2", "deit_tiny", "bert_base_layer", "digits_vit",
                 "default"):
        assert name in names
    assert get_workload("default") == get_workload("digits_vit")
    assert get_workload("ResNet-50".replace("-", "")) == get_workload("resnet50")


def test_resnet50_structure():
    w = get_workload("resnet50")
    kinds = [op.kind for op in w]
    assert kinds.count("conv") == 53 and kinds.count("gemm") == 1 and len(w) == 54
    conv1 = w[0]
    assert (conv1.name, conv1.in_ch, conv1.in_h, conv1.in_w) == ("conv1", 3, 224, 224)
    assert (conv1.kernel_h, conv1.kernel_w, conv1.stride, conv1.padding) == (7, 7, 2, 3)
    assert (conv1.out_ch, conv1.out_h, conv1.out_w) == (64, 112, 112)
    assert conv1.gemm_view == (112 * 112, 3 * 49, 64, 1)
    by_name = {op.name: op for op in w}
    # after the 3x3/2 max pool, layer1 runs at 56x56; the stride sits on the 3x3 conv (v1.5)
    assert (by_name["layer1.0.conv1"].in_h, by_name["layer1.0.conv1"].in_ch) == (56, 64)
    l2 = by_name["layer2.0.conv2"]
    assert (l2.in_h, l2.stride, l2.padding, l2.out_h, l2.kernel_h) == (56, 2, 1, 28, 3)
    ds = by_name["layer4.0.downsample.0"]
    assert (ds.in_ch, ds.in_h, ds.out_ch, ds.out_h, ds.stride, ds.kernel_h) == \
        (1024, 14, 2048, 7, 2, 1)
    fc = w[-1]
    assert (fc.name, fc.kind, fc.gemm_view) == ("fc", "gemm", (1, 2048, 1000, 1))


def test_mobilenet_v2_depthwise():
    w = get_workload("mobilenet_v2")
    dw = [op for op in w if op.kind == "dwconv"]
    assert len(dw) == 17
    assert all(op.groups == op.in_ch == op.out_ch and op.kernel_h == 3 for op in dw)
    op = {o.name: o for o in w}["features.2.conv.1.0"]
    assert (op.in_ch, op.in_h, op.in_w) == (96, 112, 112)
    assert (op.stride, op.padding, op.groups) == (2, 1, 96)
    assert (op.out_h, op.out_w) == (56, 56)
    # im2col per group: (56*56 pixels) x (1 channel * 3x3) @ (9 x 1), once per channel
    assert op.gemm_view == (56 * 56, 9, 1, 96)
    assert op.macs == 56 * 56 * 9 * 96
    assert op.weight_bytes == 96 * 9
    assert w[0].gemm_view == (112 * 112, 27, 32, 1) and w[-1].gemm_view == (1, 1280, 1000, 1)


def test_deit_tiny_structure():
    w = get_workload("deit_tiny")
    assert len(w) == 1 + 12 * 6 + 1
    patch = w[0]
    assert (patch.kind, patch.kernel_h, patch.stride, patch.padding, patch.out_h) == \
        ("conv", 16, 16, 0, 14)
    assert patch.gemm_view == (196, 3 * 256, 192, 1)
    layer0 = [op for op in w if op.name.startswith("blocks.0.")]
    assert [(op.name.split(".")[-1], op.gemm_view) for op in layer0] == [
        ("qkv", (197, 192, 576, 1)),
        ("scores", (197, 64, 197, 3)),     # per head: Q (197x64) @ K^T (64x197), 3 heads
        ("context", (197, 197, 64, 3)),    # per head: P (197x197) @ V (197x64)
        ("proj", (197, 192, 192, 1)),
        ("fc1", (197, 192, 768, 1)),
        ("fc2", (197, 768, 192, 1)),
    ]
    assert w[-1].gemm_view == (1, 192, 1000, 1)


def test_digits_vit_is_the_spec_network():
    w = get_workload("default")
    assert w[0].kind == "gemm" and w[0].gemm_view == (16, 4, 64, 1)  # 16 patches of 2x2 pixels
    scores = [op for op in w if op.kind == "attn_scores"]
    context = [op for op in w if op.kind == "attn_context"]
    assert len(scores) == len(context) == 2
    assert all(op.gemm_view == (17, 16, 17, 4) for op in scores)
    assert all(op.gemm_view == (17, 17, 16, 4) for op in context)
    # names as in gen/sparse/vit.py, so operations map onto its matrices
    assert w[0].name == "embed" and w[-1].name == "head"
    assert [op.name for op in w[1:9]] == [f"layers.0.{n}" for n in (
        "q", "k", "v", "scores", "context", "o", "fc1", "fc2")]
    assert w[-1].gemm_view == (1, 64, 10, 1)
    assert scores[0].weight_bytes == 4 * 16 * 17  # K^T of 4 heads
    assert w.param_bytes == w.weight_bytes - 2 * 2 * 4 * 16 * 17


def test_batch_scales_rows_and_attention_operands():
    one, four = get_workload("deit_tiny"), get_workload("deit_tiny", batch=4)
    assert four.macs == 4 * one.macs and len(four) == len(one)
    for a, b in zip(one, four):
        assert b.batch == 4 and b.gemm_view[0] == 4 * a.gemm_view[0]
        assert b.gemm_view[1:] == a.gemm_view[1:]
        assert b.weight_bytes == (4 * a.weight_bytes if a.is_attention else a.weight_bytes)
        assert b.input_bytes == 4 * a.input_bytes and b.output_bytes == 4 * a.output_bytes
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(UserError, match="batch"):
            get_workload("resnet50", batch=bad)


@pytest.mark.parametrize("name", ["mobilenet_v2", "deit_tiny"])
def test_as_arrays_consistent_with_ops(name):
    w = get_workload(name, batch=2)
    arrays = w.as_arrays()
    n = len(w)
    for key in ("name", "kind", "batch", "out_ch", "in_ch", "in_h", "in_w", "kernel_h",
                "kernel_w", "stride", "padding", "groups", "repeat", "M", "K", "N", "count",
                "out_h", "out_w", "macs"):
        assert arrays[key].shape == (n,), key
        if key not in ("name", "kind"):
            assert arrays[key].dtype == np.int64, key
    for i, op in enumerate(w):
        assert arrays["name"][i] == op.name and arrays["kind"][i] == op.kind
        for field in ("batch", "out_ch", "in_ch", "in_h", "in_w", "kernel_h", "kernel_w",
                      "stride", "padding", "groups", "repeat", "out_h", "out_w", "macs"):
            assert arrays[field][i] == getattr(op, field)
        assert tuple(arrays[k][i] for k in ("M", "K", "N", "count")) == op.gemm_view
    assert (arrays["M"] * arrays["K"] * arrays["N"] * arrays["count"] == arrays["macs"]).all()
    assert arrays["macs"].sum() == w.macs
    assert (arrays["kind"] == "dwconv").sum() == sum(op.kind == "dwconv" for op in w)


def test_unknown_name_lists_known_names():
    with pytest.raises(UserError) as info:
        get_workload("resnet5")
    message = str(info.value)
    assert "'resnet50'" in message and "Did you mean" in message
    for name in workload_names():
        assert name in message
    with pytest.raises(UserError, match="Known workloads"):
        get_workload("alexnet_xyz")


@pytest.mark.parametrize("name", ["resnet50", "digits_vit"])
def test_format_table_lists_every_op(name):
    w = get_workload(name)
    table = format_table(w)
    lines = table.splitlines()
    assert len(lines) == len(w) + 4  # title, header, rule, ops, totals
    for i, op in enumerate(w):
        cells = lines[3 + i].split()
        assert cells[0] == str(i) and cells[1] == op.name and cells[2] == op.kind
        m, k, n, count = op.gemm_view
        assert f"{m}x{k}x{n} x{count}" in lines[3 + i]
    assert f"{w.macs:,} MACs" in lines[-1] and f"{w.param_bytes:,} bytes" in lines[-1]
    assert format_table(name) == table


def test_operation_validation():
    with pytest.raises(UserError, match="kind"):
        Operation("x", "fc", 1, 8, 8, 4, 1)
    with pytest.raises(UserError, match="groups"):
        Operation("x", "dwconv", 1, 8, 8, 4, 4, 3, 3, 1, 1, groups=4)
    with pytest.raises(UserError, match="divide"):
        Operation("x", "conv", 1, 8, 6, 4, 4, 3, 3, 1, 1, groups=4)
    with pytest.raises(UserError, match="rows go in in_h"):
        Operation("x", "gemm", 1, 8, 8, 4, 4)
    with pytest.raises(UserError, match="stride"):
        Operation("x", "conv", 1, 8, 8, 4, 4, 3, 3, 0, 1)
    with pytest.raises(UserError, match="larger than"):
        Operation("x", "conv", 1, 8, 8, 2, 2, 5, 5, 1, 1)
    with pytest.raises(UserError, match="integer"):
        Operation("x", "conv", 1.5, 8, 8, 4, 4)
    with pytest.raises(UserError, match="not an Operation"):
        Workload("w", ("op",))
    op = Operation("x", "gemm", np.int64(2), 8, 4, 5, 1)  # numpy ints are accepted, stored as int
    assert type(op.batch) is int and op.gemm_view == (10, 4, 8, 1) and op.macs == 320


def test_grouped_conv_gemm_view():
    op = Operation("g", "conv", 2, out_ch=64, in_ch=32, in_h=10, in_w=12, kernel_h=3, kernel_w=3,
                   stride=2, padding=1, groups=4)
    assert (op.out_h, op.out_w) == (5, 6)
    assert op.gemm_view == (2 * 5 * 6, 8 * 9, 16, 4)
    assert op.weight_bytes == 64 * 8 * 9
    assert op.input_bytes == 2 * 32 * 10 * 12 and op.output_bytes == 2 * 64 * 5 * 6


class _Toy(nn.Module):
    def __init__(self, convs):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.lin = nn.Linear(6, 5)
        self.scores = MatMul("attn_scores")
        self.context = MatMul("attn_context")

    def forward(self, x, tokens):
        outs = [conv(x) for conv in self.convs]
        h = self.lin(tokens)                      # (B, T, 5)
        q = h.reshape(h.shape[0], 1, h.shape[1], 5).expand(-1, 2, -1, -1)  # 2 heads
        s = self.scores(q, q.transpose(-2, -1))
        o = self.context(s, q)
        self.lin(tokens)                          # a second call of the same module
        return outs, o


def test_from_module_matches_torch_shapes():
    rng = random.Random(3)
    convs = []
    for _ in range(12):
        groups = rng.choice([1, 2, 4])
        in_ch = groups * rng.randint(1, 3)
        depthwise = rng.random() < 0.3
        if depthwise:
            in_ch = groups = rng.randint(2, 6)
        out_ch = groups * rng.randint(1, 3)
        k = rng.randint(1, 5)
        convs.append(nn.Conv2d(in_ch, out_ch, k, stride=rng.randint(1, 3),
                               padding=rng.randint(0, k // 2 + 1), groups=groups))
    x = [torch.zeros(2, conv.in_channels, rng.randint(6, 11), rng.randint(6, 11)) for conv in convs]

    class Fan(nn.Module):  # each conv gets its own input
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(convs)

        def forward(self, *xs):
            return [conv(xi) for conv, xi in zip(self.convs, xs)]

    w = from_module(Fan(), tuple(x), "fan")
    assert len(w) == len(convs)
    with torch.no_grad():
        for op, conv, xi in zip(w, convs, x):
            y = conv(xi)  # torch is the reference for the output size
            assert (op.batch, op.out_ch, op.out_h, op.out_w) == tuple(y.shape)
            assert op.macs == y.numel() * conv.in_channels // conv.groups * \
                conv.kernel_size[0] * conv.kernel_size[1]
            assert op.kind == ("dwconv" if conv.groups == conv.in_channels > 1 else "conv")
            assert op.groups == conv.groups


def test_from_module_linear_matmul_and_repeated_calls():
    toy = _Toy([nn.Conv2d(3, 4, 3, padding=1)])
    w = from_module(toy, (torch.zeros(2, 3, 5, 5), torch.zeros(2, 7, 6)), "toy")
    assert [op.name for op in w] == ["convs.0", "lin", "scores", "context", "lin#2"]
    lin, scores, context = w[1], w[2], w[3]
    assert (lin.kind, lin.batch, lin.gemm_view) == ("gemm", 2, (14, 6, 5, 1))
    assert (scores.kind, scores.repeat, scores.gemm_view) == ("attn_scores", 2, (14, 5, 7, 2))
    assert (context.kind, context.repeat, context.gemm_view) == ("attn_context", 2, (14, 7, 5, 2))
    assert scores.weight_bytes == 2 * 2 * 5 * 7  # per batch item and per head
    assert set(op.kind for op in w) <= set(KINDS)


def test_from_module_refuses_what_the_engine_cannot_run():
    with pytest.raises(UserError, match="differs between height and width"):
        from_module(nn.Conv2d(3, 4, 3, stride=(1, 2)), torch.zeros(1, 3, 8, 8), "bad")
    with pytest.raises(UserError, match="dilated"):
        from_module(nn.Conv2d(3, 4, 3, dilation=2), torch.zeros(1, 3, 8, 8), "bad")
    with pytest.raises(UserError, match="no Conv2d"):
        from_module(nn.ReLU(), torch.zeros(1, 3), "bad")
