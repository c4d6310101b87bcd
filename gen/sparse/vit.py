"""The tiny ViT of docs/sparse_attention.md section 1, its data, training and a state cache.

Data: scikit-learn's 8x8 digits (1797 images, pixel values 0..16 scaled to 0..1), split by a
seeded permutation into train (60 %), validation (20 %: 359 images, so that one point of
accuracy is several images when it steers pruning) and test (20 %, the reported accuracy).

Model: 2x2 patches -> 16 tokens (a linear embedding of 4 pixels) plus a class token = 17 tokens,
D = 64, 4 heads of 16, FFN 128 with ReLU, 2 pre-LayerNorm encoder layers, final LayerNorm and a
linear classifier on the class token.

Two options serve the all-integer ViT (docs/vit.md), both off by default (the models, and their
cache names, of docs/sparse_attention.md): ``activation="gelu"`` (the exact erf GELU in the FFN)
and ``clamp_scores=True``, which clamps the float attention scores to the range that the INT8
score of docs/sparse_attention.md section 4 can hold (``s / 16`` log2 units, s in -128..127), so
that training sees the saturation the integer model has.

Every weight matrix of an encoder layer (q, k, v, o, fc1, fc2) is a :class:`MaskedLinear`: it
keeps W as (in_features K, out_features N) so that ``y = x @ W + b`` exactly as the spec writes it,
and carries what pruning needs (a per-input-feature gain ``gamma``, an element mask and a bias
mask). An unpruned model has ``gamma = 1`` and all-ones masks, so it is an ordinary ViT.
"""

import hashlib
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..artifacts import write_atomic
from ..errors import UserError

__all__ = ["ACTIVATIONS", "SCORE_RANGE", "TOKENS", "DIM", "HEADS", "HEAD_DIM", "FFN", "LAYERS",
           "MATRICES", "Digits", "load_digits_split", "MaskedLinear", "EncoderLayer", "TinyViT",
           "train", "evaluate", "load_or_train", "state_sha256", "setup_torch", "load_cached_state",
           "save_cached_state", "check_activation", "variant_suffix"]

TOKENS = 17
DIM = 64
HEADS = 4
HEAD_DIM = DIM // HEADS
FFN = 128
LAYERS = 2
CLASSES = 10
MATRICES = ("q", "k", "v", "o", "fc1", "fc2")
#: The FFN activations: ReLU (the default, docs/sparse_attention.md) or exact GELU (docs/vit.md).
ACTIVATIONS = ("relu", "gelu")
#: The float scores (natural units) an INT8 score in log2/16 units can hold: -128/16 .. 127/16
#: log2 units (docs/sparse_attention.md section 4 step 2).
SCORE_RANGE = (-128 / 16 * math.log(2), 127 / 16 * math.log(2))

FULL_EPOCHS = 60
QUICK_EPOCHS = 10
RECIPE_VERSION = 2


def setup_torch(seed):
    """Seed torch and make it deterministic on one thread (the machine is shared)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)


class Digits:
    """The seeded split: ``train``, ``val``, ``test`` as (images float [n, 8, 8], labels int64)."""

    def __init__(self, seed):
        from sklearn.datasets import load_digits
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.int64)
        order = torch.tensor(np.random.RandomState(seed).permutation(len(labels)))
        n_train = int(0.6 * len(labels))
        n_val = int(0.2 * len(labels))
        parts = (order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:])
        self.train, self.val, self.test = ((images[p], labels[p]) for p in parts)


_SPLITS = {}


def load_digits_split(seed):
    """The :class:`Digits` split for ``seed`` (cached in memory)."""
    if seed not in _SPLITS:
        _SPLITS[seed] = Digits(seed)
    return _SPLITS[seed]


class MaskedLinear(nn.Module):
    """``y = (x * gamma) @ (W * mask) + b * bias_mask`` with W of shape (K, N).

    Members
    -------
    weight : Parameter (K, N)
        Rows are input features, columns output features (spec section 1).
    bias : Parameter (N)
    gamma : Parameter (K)
        The per-input-feature gain inserted for row pruning (Zhang et al.); 1 when not in use.
        :meth:`fold_gamma` multiplies it into the rows of W.
    mask : buffer (K, N)
        1 for kept weights, 0 for pruned ones.
    bias_mask : buffer (N)
        0 where a pruned Q/K feature forces the bias to 0.
    """

    def __init__(self, in_features, out_features):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.gamma = nn.Parameter(torch.ones(in_features), requires_grad=False)
        self.register_buffer("mask", torch.ones(in_features, out_features))
        self.register_buffer("bias_mask", torch.ones(out_features))

    @property
    def in_features(self):
        return self.weight.shape[0]

    @property
    def out_features(self):
        return self.weight.shape[1]

    def effective_weight(self):
        """The W that inference uses: gamma folded into the rows, pruned entries 0."""
        return self.gamma.detach()[:, None] * self.weight.detach() * self.mask

    def effective_bias(self):
        return self.bias.detach() * self.bias_mask

    @torch.no_grad()
    def fold_gamma(self):
        """``(x * g) @ W == x @ (diag(g) W)``: scale row k of W by g[k], then set g = 1."""
        self.weight.mul_(self.gamma[:, None])
        self.gamma.fill_(1.0)

    def forward(self, x):
        return (x * self.gamma) @ (self.weight * self.mask) + self.bias * self.bias_mask


def check_activation(activation):
    """Raise :class:`UserError` unless ``activation`` is one of :data:`ACTIVATIONS`."""
    if activation not in ACTIVATIONS:
        raise UserError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                        f"got {activation!r}")
    return activation


class EncoderLayer(nn.Module):
    """Pre-LN encoder layer: ``x + MHA(LN1(x))`` then ``+ FFN(LN2(.))`` with ReLU or GELU."""

    def __init__(self, activation="relu", clamp_scores=False):
        super().__init__()
        self.activation = check_activation(activation)
        self.clamp_scores = bool(clamp_scores)
        self.ln1 = nn.LayerNorm(DIM)
        self.q = MaskedLinear(DIM, DIM)
        self.k = MaskedLinear(DIM, DIM)
        self.v = MaskedLinear(DIM, DIM)
        self.o = MaskedLinear(DIM, DIM)
        self.ln2 = nn.LayerNorm(DIM)
        self.fc1 = MaskedLinear(DIM, FFN)
        self.fc2 = MaskedLinear(FFN, DIM)

    def matrices(self):
        """``{name: MaskedLinear}`` in the order of :data:`MATRICES`."""
        return {name: getattr(self, name) for name in MATRICES}

    def attention(self, x):
        b, t, _ = x.shape
        q, k, v = (m(x).view(b, t, HEADS, HEAD_DIM).transpose(1, 2)
                   for m in (self.q, self.k, self.v))
        scores = self.scores(q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM))
        context = torch.softmax(scores, dim=-1) @ v
        return self.o(context.transpose(1, 2).reshape(b, t, DIM))

    def scores(self, s):
        """Float attention scores as softmax sees them: clamped to :data:`SCORE_RANGE` when
        ``clamp_scores``."""
        return s.clamp(*SCORE_RANGE) if self.clamp_scores else s

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))

    def act(self, h):
        """The FFN activation: ReLU, or the exact (erf) GELU."""
        return F.gelu(h) if self.activation == "gelu" else F.relu(h)


class TinyViT(nn.Module):
    """The model of spec section 1. ``forward`` takes images [n, 8, 8] in 0..1."""

    def __init__(self, activation="relu", clamp_scores=False):
        super().__init__()
        self.activation = check_activation(activation)
        self.clamp_scores = bool(clamp_scores)
        self.embed = nn.Linear(4, DIM)
        self.cls = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos = nn.Parameter(torch.randn(1, TOKENS, DIM) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(activation, clamp_scores)
                                    for _ in range(LAYERS))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, CLASSES)

    @staticmethod
    def patches(images):
        """[n, 8, 8] -> [n, 16, 4]: 2x2 patches in raster order, pixels in raster order."""
        n = images.shape[0]
        return images.view(n, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(n, 16, 4)

    def tokens(self, images):
        """The embedded sequence [n, 17, D] that enters layer 0 (class token first)."""
        x = self.embed(self.patches(images))
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos

    def classify(self, x):
        return self.head(self.norm(x[:, 0]))

    def forward(self, images):
        x = self.tokens(images)
        for layer in self.layers:
            x = layer(x)
        return self.classify(x)

    def masked_linears(self):
        """``[(layer index, name, MaskedLinear)]`` over all encoder layers."""
        return [(i, name, m) for i, layer in enumerate(self.layers)
                for name, m in layer.matrices().items()]


@torch.no_grad()
def evaluate(model, split, forward=None):
    """Accuracy in percent of ``forward(images)`` (default: the float model) on a split."""
    images, labels = split
    was_training = model.training
    model.eval()
    logits = (forward or model)(images)
    model.train(was_training)
    return 100.0 * (logits.argmax(-1) == labels).float().mean().item()


def train(model, data, epochs, lr=3e-3, seed=0, penalty=None, weight_decay=0.02, progress=None,
          batch=32, augment=False):
    """Seeded AdamW, one-cycle schedule, on ``data.train``; ``penalty(model)`` adds to the loss.

    Only parameters with ``requires_grad`` are optimised. The data order comes from a generator
    seeded with ``seed``, so a run is reproducible.
    """
    images, labels = data.train
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(labels) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1 if epochs > 5 else 0.3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(labels), generator=gen)
        for i in range(0, len(labels), batch):
            idx = order[i:i + batch]
            x = images[idx]
            # Optional one-pixel random shifts (off by default: measured worse on digits, because
            # torch.roll wraps ink around the 8x8 border).
            if augment:
                shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
                x = torch.roll(x, shifts=shift, dims=(1, 2))
            loss = F.cross_entropy(model(x), labels[idx])
            if penalty is not None:
                loss = loss + penalty(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if progress and (epoch + 1) % max(1, epochs // 4) == 0:
            progress(f"  epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, "
                     f"val {evaluate(model, data.val):.1f}%")
    model.eval()
    return model


def state_sha256(model):
    """sha256 over the float state dict: names, shapes and float32 bytes, in sorted name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to(torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def variant_suffix(activation="relu", clamp_scores=False):
    """The part of a cache name for the options: empty for the defaults (ReLU, no clamp)."""
    return ("" if check_activation(activation) == "relu" else f"_{activation}") + \
        ("_clampS" if clamp_scores else "")


def load_cached_state(weights, meta, progress=None, activation="relu", clamp_scores=False):
    """``(model, info)`` from a cache entry, or None: missing, or damaged (truncated, not JSON,
    a state that does not load or does not hash to the recorded sha256), which is said in one
    warning line and then rebuilt by the caller."""
    if not (weights.exists() and meta.exists()):
        return None
    try:
        info = json.loads(meta.read_text())
        model = TinyViT(activation, clamp_scores)
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
        ok = isinstance(info, dict) and info.get("sha256") == state_sha256(model)
    except Exception as exc:        # torch raises many kinds for a damaged file
        ok, why = False, f"{type(exc).__name__}: {str(exc)[:80]}"
    else:
        why = "its sha256 does not match"
    if ok:
        return model, info
    warn = progress or print
    warn(f"warning: the cached model {weights} is damaged ({why}); rebuilding it")
    return None


def save_cached_state(model, info, weights, meta):
    """Write a cache entry atomically: the state first, then the JSON that vouches for it."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    write_atomic(weights, buffer.getvalue())
    write_atomic(meta, json.dumps(info, indent=1))


def load_or_train(seed=0, cache_dir="rtl_out/models", quick=False, progress=None,
                  activation="relu", clamp_scores=False):
    """The trained float model for ``seed``: loaded from ``cache_dir`` or trained and saved there.

    Returns ``(model, info)`` with ``info`` a dict: epochs, train_seconds, val/test accuracy,
    sha256 of the state. ``quick`` trains :data:`QUICK_EPOCHS` instead of :data:`FULL_EPOCHS`
    (for tests) and caches under another name. ``activation`` and ``clamp_scores`` (module
    docstring) join the name when not the defaults, so the default names are those of before.
    """
    suffix = variant_suffix(activation, clamp_scores)
    setup_torch(seed)
    data = load_digits_split(seed)
    cache = Path(cache_dir)
    epochs = QUICK_EPOCHS if quick else FULL_EPOCHS
    # The recipe is part of the name, so changing it never reuses a stale cache.
    stem = f"vit_digits_seed{seed}_e{epochs}_v{RECIPE_VERSION}"
    stem += suffix
    weights, meta = cache / f"{stem}.pt", cache / f"{stem}.json"
    cached = load_cached_state(weights, meta, progress, activation, clamp_scores)
    if cached is not None:
        if progress:
            progress(f"[train] loaded {weights}")
        return cached
    model = TinyViT(activation, clamp_scores)
    if progress:
        progress(f"[train] training the float ViT{suffix}, {epochs} epochs, seed {seed}")
    start = time.monotonic()
    train(model, data, epochs, seed=seed, progress=progress)
    info = {"seed": seed, "epochs": epochs, "activation": activation,
            "clamp_scores": bool(clamp_scores), "train_seconds": round(time.monotonic() - start, 1),
            "val_accuracy": evaluate(model, data.val), "test_accuracy": evaluate(model, data.test),
            "sha256": state_sha256(model)}
    save_cached_state(model, info, weights, meta)
    if progress:
        progress(f"[train] {info['train_seconds']}s, val {info['val_accuracy']:.1f}%, "
                 f"test {info['test_accuracy']:.1f}%, saved {weights}")
    return model, info
