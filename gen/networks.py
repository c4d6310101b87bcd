"""Torch definitions of the networks ``gen.workloads`` knows by name.

torchvision does not import in this environment, so the reference CNNs are written out here,
layer for layer, with torchvision's module names (``layer1.0.conv2``, ``features.3.conv.1.0``)
so that operation names match what users see elsewhere. Only shapes matter to the generator:
``gen.workloads`` builds these modules on torch's ``meta`` device and runs a forward pass to
read the shapes, so no weights are allocated and no arithmetic is done.

Attention products are not modules in plain torch code, so forward hooks cannot see them. The
transformers here route them through :class:`MatMul`, a module whose ``workload_kind`` attribute
tells the extractor which attention product it is (``attn_scores`` or ``attn_context``).
"""

import torch
from torch import nn

__all__ = [
    "MatMul", "ResNet50", "MobileNetV2", "VisionTransformer", "BertLayer", "DigitsViT",
    "resnet50", "mobilenet_v2", "deit_tiny", "digits_vit", "bert_base_layer",
]


class MatMul(nn.Module):
    """``a @ b`` as a module, so that a forward hook sees the attention products.

    Parameters
    ----------
    kind : str
        ``"attn_scores"`` (Q @ K^T) or ``"attn_context"`` (P @ V); read by the extractor.
    """

    def __init__(self, kind):
        super().__init__()
        if kind not in ("attn_scores", "attn_context"):
            raise ValueError(f"MatMul kind must be attn_scores or attn_context, not {kind!r}")
        self.workload_kind = kind

    def forward(self, a, b):
        return a @ b


# --- ResNet-50 (torchvision v1.5: the stride sits on the 3x3 conv of each bottleneck) ---------

class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch, width, stride=1, downsample=None):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50 for 224x224 ImageNet: 53 convolutions and one fully connected layer."""

    def __init__(self, num_classes=1000, layers=(3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for index, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            stride = 1 if index == 0 else 2
            downsample = nn.Sequential(
                nn.Conv2d(in_ch, width * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(width * 4))
            stage = [Bottleneck(in_ch, width, stride, downsample)]
            in_ch = width * 4
            stage += [Bottleneck(in_ch, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- MobileNetV2 (torchvision layout, width multiplier 1.0) ------------------------------------

def _conv_bn_relu(in_ch, out_ch, kernel=3, stride=1, groups=1):
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, in_ch, out_ch, stride, expand_ratio):
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_residual = stride == 1 and in_ch == out_ch
        layers = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu(in_ch, hidden, kernel=1))
        layers += [
            _conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),  # depthwise 3x3
            nn.Conv2d(hidden, out_ch, 1, bias=False),                      # linear projection
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) for 224x224 ImageNet; depthwise convs have ``groups=in_ch``."""

    # (expansion t, channels c, repeats n, first stride s) per stage, as in the paper's Table 2
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes=1000):
        super().__init__()
        in_ch = 32
        features = [_conv_bn_relu(3, in_ch, stride=2)]
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        features.append(_conv_bn_relu(in_ch, 1280, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# --- Transformers -------------------------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head self-attention with explicit per-head products (see :class:`MatMul`).

    ``fused_qkv`` selects one ``qkv`` linear (timm's ViT/DeiT) or separate ``q``, ``k``, ``v``.
    ``names[3] = None`` leaves the output projection to the caller (BERT keeps it elsewhere).
    """

    def __init__(self, dim, heads, fused_qkv=True, names=("q", "k", "v", "proj")):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads, self.head_dim, self.fused_qkv = heads, dim // heads, fused_qkv
        self._names = names
        if fused_qkv:
            self.qkv = nn.Linear(dim, 3 * dim)
        else:
            for n in names[:3]:
                self.add_module(n, nn.Linear(dim, dim))
        self.scores = MatMul("attn_scores")
        self.context = MatMul("attn_context")
        if names[3] is not None:
            self.add_module(names[3], nn.Linear(dim, dim))

    def _split(self, x):
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)

    def forward(self, x):
        b, t, d = x.shape
        if self.fused_qkv:
            q, k, v = self.qkv(x).split(d, dim=-1)
        else:
            q, k, v = (getattr(self, n)(x) for n in self._names[:3])
        q, k, v = self._split(q), self._split(k), self._split(v)
        p = torch.softmax(self.scores(q, k.transpose(-2, -1)) * self.head_dim ** -0.5, dim=-1)
        o = self.context(p, v).transpose(1, 2).reshape(b, t, d)
        return o if self._names[3] is None else getattr(self, self._names[3])(o)


class Mlp(nn.Module):
    def __init__(self, dim, hidden, act):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LayerNorm encoder block (ViT/DeiT)."""

    def __init__(self, dim, heads, mlp_dim, fused_qkv, act):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, fused_qkv)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_dim, act)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT with a class token; the classifier reads the class token only.

    ``patch_mode="conv"`` embeds patches with a ``patch x patch`` convolution of the same stride
    (timm's DeiT); ``"linear"`` cuts the image into patches and applies one linear layer, i.e.
    the GEMM (tokens x patch pixels) @ (patch pixels x dim) of the digits ViT.
    """

    def __init__(self, img_size, patch, in_chans, dim, depth, heads, mlp_dim, num_classes,
                 patch_mode="conv", fused_qkv=True, act=None):
        super().__init__()
        if img_size % patch:
            raise ValueError(f"image size {img_size} is not a multiple of patch {patch}")
        self.patch, self.patch_mode = patch, patch_mode
        self.patch_embed = nn.Module()
        if patch_mode == "conv":
            self.patch_embed.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)
        elif patch_mode == "linear":
            self.patch_embed.proj = nn.Linear(in_chans * patch * patch, dim)
        else:
            raise ValueError(f"patch_mode must be conv or linear, not {patch_mode!r}")
        tokens = (img_size // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        act = act if act is not None else nn.GELU()
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_dim, fused_qkv, act)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.patch
        if self.patch_mode == "conv":
            x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        else:  # (B, C, H, W) -> (B, H/p * W/p, C*p*p), patches in row-major order
            x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
            x = self.patch_embed.proj(x.reshape(b, (h // p) * (w // p), c * p * p))
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class BertLayer(nn.Module):
    """One BERT encoder layer (post-LayerNorm) with HuggingFace's module names."""

    def __init__(self, hidden=768, heads=12, intermediate=3072):
        super().__init__()
        self.attention = nn.Module()
        self.attention.self = Attention(hidden, heads, fused_qkv=False,
                                        names=("query", "key", "value", None))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(hidden, hidden)
        self.attention.output.norm = nn.LayerNorm(hidden)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(hidden, intermediate)
        self.output = nn.Module()
        self.output.dense = nn.Linear(intermediate, hidden)
        self.output.norm = nn.LayerNorm(hidden)

    def forward(self, x):
        out = self.attention.output
        x = out.norm(x + out.dense(self.attention.self(x)))
        h = nn.functional.gelu(self.intermediate.dense(x))
        return self.output.norm(x + self.output.dense(h))


class DigitsViT(nn.Module):
    """The built-in default network (docs/sparse_attention.md section 1), shapes only.

    Module names follow ``gen/sparse/vit.py`` (``embed``, ``layers.0.q`` ... ``layers.0.o``,
    ``layers.0.fc1``, ``head``) so that operations map onto the compressed matrices by name.
    The input is (N, 1, 8, 8); the 16 patches of 2x2 pixels are embedded by one linear layer.
    """

    def __init__(self, dim=64, heads=4, ffn=128, layers=2, classes=10):
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 17, dim))
        self.layers = nn.ModuleList(_DigitsLayer(dim, heads, ffn) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        n = x.shape[0]
        patches = x.reshape(n, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(n, 16, 4)
        x = torch.cat([self.cls.expand(n, -1, -1), self.embed(patches)], dim=1) + self.pos
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x[:, 0]))


class _DigitsLayer(nn.Module):
    def __init__(self, dim, heads, ffn):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.scores = MatMul("attn_scores")
        self.context = MatMul("attn_context")
        self.o = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = (m(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for m in (self.q, self.k, self.v))
        p = torch.softmax(self.scores(q, k.transpose(-1, -2)), dim=-1)
        x = x + self.o(self.context(p, v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(torch.relu(self.fc1(self.ln2(x))))


# --- Factories: (module, example input shape at batch 1) ---------------------------------------

def resnet50():
    return ResNet50(), (1, 3, 224, 224)


def mobilenet_v2():
    return MobileNetV2(), (1, 3, 224, 224)


def deit_tiny():
    return VisionTransformer(224, 16, 3, 192, 12, 3, 768, 1000, patch_mode="conv"), (1, 3, 224, 224)


def digits_vit():
    """The built-in default network (docs/sparse_attention.md section 1)."""
    return DigitsViT(), (1, 1, 8, 8)


def bert_base_layer():
    return BertLayer(768, 12, 3072), (1, 128, 768)
