"""Networks as lists of operations with shapes: the first stage of the flow (docs/DESIGN.md section 1).

An :class:`Operation` is one convolution, depthwise convolution, GEMM (linear layer) or per-head
attention product, with the shapes, stride and padding the engine needs. A :class:`Workload` is
a named tuple of them in execution order. Every operation has one GEMM view, ``gemm_view =
(M, K, N, count)``: ``count`` independent products of an (M x K) by a (K x N) matrix, which is
what the PE array runs (im2col for convolutions, one product per group / head).

Conventions, all INT8 (one byte per element):

* ``conv`` / ``dwconv``: input (batch, in_ch, in_h, in_w), weights (out_ch, in_ch/groups, R, S).
  ``dwconv`` is the depthwise case ``groups == in_ch``; other grouped convolutions are ``conv``.
* ``gemm``: ``x @ W`` with x of shape (batch * in_h, in_ch) and W (in_ch, out_ch): ``in_h`` is the
  number of rows (tokens) per batch item, ``in_w = 1``, kernel 1x1, stride 1, padding 0.
* ``attn_scores``: per head, Q (T x d) @ K^T (d x T): ``in_h = T, in_ch = d, out_ch = T``.
  ``attn_context``: per head, P (T x T) @ V (T x d): ``in_h = T, in_ch = T, out_ch = d``.
  ``repeat`` is the number of heads. The right-hand operand is an activation, different per head
  and per batch item; ``weight_bytes`` counts it that way (for conv/gemm the weights are shared
  across the batch).

Known networks are built from the torch modules in :mod:`gen.networks` and read with forward
hooks (:func:`from_module`) on torch's ``meta`` device: shapes only, no arithmetic.
"""

import dataclasses
import difflib
import functools
import math
import operator
from dataclasses import dataclass

import numpy as np

from .errors import UserError

__all__ = ["Operation", "Workload", "KINDS", "get_workload", "workload_names", "format_table",
           "from_module"]

KINDS = ("conv", "dwconv", "gemm", "attn_scores", "attn_context")
_GEMM_LIKE = ("gemm", "attn_scores", "attn_context")
_INT_FIELDS = ("batch", "out_ch", "in_ch", "in_h", "in_w", "kernel_h", "kernel_w", "stride",
               "padding", "groups", "repeat")


@dataclass(frozen=True)
class Operation:
    """One operation of a network, with INT8 shapes.

    Members
    -------
    name, kind : str
        Module path (``"layer1.0.conv2"``) and one of :data:`KINDS`.
    batch, out_ch, in_ch, in_h, in_w, kernel_h, kernel_w, stride, padding, groups, repeat : int
        N, K, C (total input channels), Y, X, R, S, stride, padding, groups, identical
        instances (heads for attention). For GEMMs ``in_h`` is the row count M and ``in_w = 1``.

    Derived (read-only): ``out_h``, ``out_w``, ``gemm_view``, ``macs``, ``weight_bytes``,
    ``input_bytes``, ``output_bytes``.
    """

    name: str
    kind: str
    batch: int
    out_ch: int
    in_ch: int
    in_h: int
    in_w: int
    kernel_h: int = 1
    kernel_w: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    repeat: int = 1

    def __post_init__(self):
        where = f"operation {self.name!r}"
        if self.kind not in KINDS:
            raise UserError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        for field in _INT_FIELDS:
            value = getattr(self, field)
            try:
                value = operator.index(value)
            except TypeError:
                raise UserError(f"{where}: {field} must be an integer, not {value!r}") from None
            object.__setattr__(self, field, int(value))  # numpy ints -> int, so hashing is stable
            if value < (0 if field == "padding" else 1):
                raise UserError(f"{where}: {field} = {value} must be "
                                f"{'>= 0' if field == 'padding' else '>= 1'}")
        if self.in_ch % self.groups or self.out_ch % self.groups:
            raise UserError(f"{where}: groups = {self.groups} must divide in_ch = {self.in_ch} "
                            f"and out_ch = {self.out_ch}")
        if self.kind == "dwconv" and self.groups != self.in_ch:
            raise UserError(f"{where}: a dwconv has groups == in_ch ({self.in_ch}), not "
                            f"{self.groups}; use kind 'conv' for other grouped convolutions")
        if self.kind in _GEMM_LIKE:
            shape = (self.in_w, self.kernel_h, self.kernel_w, self.stride, self.groups)
            if shape != (1, 1, 1, 1, 1) or self.padding:
                raise UserError(f"{where}: a {self.kind} has in_w = kernel_h = kernel_w = stride = "
                                f"groups = 1 and padding = 0 (the rows go in in_h)")
        pad2 = 2 * self.padding
        if self.in_h + pad2 < self.kernel_h or self.in_w + pad2 < self.kernel_w:
            raise UserError(f"{where}: kernel {self.kernel_h}x{self.kernel_w} is larger than the "
                            f"padded input {self.in_h}x{self.in_w} (padding {self.padding})")

    @property
    def out_h(self):
        return (self.in_h + 2 * self.padding - self.kernel_h) // self.stride + 1

    @property
    def out_w(self):
        return (self.in_w + 2 * self.padding - self.kernel_w) // self.stride + 1

    @property
    def is_attention(self):
        """True when the right-hand operand is an activation (per head, per batch item)."""
        return self.kind in ("attn_scores", "attn_context")

    @property
    def gemm_view(self):
        """``(M, K, N, count)``: ``count`` products of (M x K) @ (K x N), im2col for convs."""
        return (self.batch * self.out_h * self.out_w,
                self.in_ch // self.groups * self.kernel_h * self.kernel_w,
                self.out_ch // self.groups,
                self.groups * self.repeat)

    @property
    def macs(self):
        m, k, n, count = self.gemm_view
        return m * k * n * count

    @property
    def weight_bytes(self):
        """Bytes of the right-hand operand (weights; K^T or V for attention), all instances."""
        _, k, n, count = self.gemm_view
        return k * n * count * (self.batch if self.is_attention else 1)

    @property
    def input_bytes(self):
        return self.batch * self.in_ch * self.in_h * self.in_w * self.repeat

    @property
    def output_bytes(self):
        return self.batch * self.out_ch * self.out_h * self.out_w * self.repeat


@dataclass(frozen=True)
class Workload:
    """A named sequence of :class:`Operation` in execution order.

    ``len(workload)``, iteration and indexing go over ``ops``; ``macs`` is the total;
    :meth:`as_arrays` gives column arrays for vectorized cost models.
    """

    name: str
    ops: tuple

    def __post_init__(self):
        ops = tuple(self.ops)
        for op in ops:
            if not isinstance(op, Operation):
                raise UserError(f"workload {self.name!r}: {op!r} is not an Operation")
        object.__setattr__(self, "ops", ops)

    def __len__(self):
        return len(self.ops)

    def __iter__(self):
        return iter(self.ops)

    def __getitem__(self, index):
        return self.ops[index]

    @property
    def len(self):
        return len(self.ops)

    @property
    def macs(self):
        return sum(op.macs for op in self.ops)

    @property
    def weight_bytes(self):
        """Right-hand operand bytes of all operations (attention K^T / V included)."""
        return sum(op.weight_bytes for op in self.ops)

    @property
    def param_bytes(self):
        """INT8 weights of the conv/gemm layers only: the network's stored parameters."""
        return sum(op.weight_bytes for op in self.ops if not op.is_attention)

    def with_batch(self, batch):
        """The same workload with every operation at batch size ``batch``."""
        batch = _check_batch(batch)
        return Workload(self.name, tuple(dataclasses.replace(op, batch=batch) for op in self.ops))

    def as_arrays(self):
        """Columns: one array per Operation field plus the derived values.

        ``name`` and ``kind`` are numpy string arrays (``arrays["kind"] == "dwconv"`` works); every
        other entry is int64: the integer fields, ``M, K, N, count`` (the GEMM view), ``out_h,
        out_w, macs, weight_bytes, input_bytes, output_bytes``.
        """
        ops = self.ops
        arrays = {"name": np.array([op.name for op in ops], dtype=str),
                  "kind": np.array([op.kind for op in ops], dtype=str)}
        for field in _INT_FIELDS:
            arrays[field] = np.array([getattr(op, field) for op in ops], dtype=np.int64)
        views = np.array([op.gemm_view for op in ops], dtype=np.int64).reshape(len(ops), 4)
        for i, key in enumerate(("M", "K", "N", "count")):
            arrays[key] = views[:, i].copy()
        for key in ("out_h", "out_w", "macs", "weight_bytes", "input_bytes", "output_bytes"):
            arrays[key] = np.array([getattr(op, key) for op in ops], dtype=np.int64)
        return arrays


def _check_batch(batch):
    try:
        batch = operator.index(batch)
    except TypeError:
        raise UserError(f"batch must be an integer, not {batch!r}") from None
    if batch < 1:
        raise UserError(f"batch must be >= 1, not {batch}")
    return int(batch)


# --- extraction from torch modules --------------------------------------------------------------

def _single(value, what, name):
    """A conv parameter as one int: the generator handles square kernels/strides/padding only."""
    if isinstance(value, str):
        raise UserError(f"{name}: padding={value!r} is not supported; give explicit integer "
                        f"padding")
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(set(values)) != 1:
        raise UserError(f"{name}: {what} {tuple(values)} differs between height and width; only "
                        f"equal values are supported")
    return int(values[0])


def from_module(module, example_input, name):
    """Run ``module`` on ``example_input`` and record its operations with forward hooks.

    Recorded: ``nn.Conv2d`` (``dwconv`` when ``groups == in_channels > 1``), ``nn.Linear``
    (leading input dimensions: the first is the batch, the rest are rows), and any module with a
    ``workload_kind`` attribute of ``"attn_scores"`` or ``"attn_context"`` whose forward is
    ``a @ b`` on (batch, heads..., M, K) and (batch, heads..., K, N) tensors (see
    :class:`gen.networks.MatMul`). Other modules (norms, activations, pooling) are not operations
    of the PE array and are skipped. A module called more than once gets ``#2``, ``#3``...
    ``example_input`` is a tensor or a tuple of positional arguments; it may live on the
    ``meta`` device, so shapes are read without doing the arithmetic. The module runs in eval
    mode under ``torch.no_grad()``; its training flag is restored afterwards.
    """
    import torch
    from torch import nn

    records = []
    calls = {}

    def op_name(mod_name):
        calls[mod_name] = calls.get(mod_name, 0) + 1
        return mod_name if calls[mod_name] == 1 else f"{mod_name}#{calls[mod_name]}"

    def conv_hook(mod_name):
        def hook(mod, args, output):
            x = args[0]
            label = op_name(mod_name)
            if x.dim() != 4:
                raise UserError(f"{label}: Conv2d input must be (N, C, H, W), got {tuple(x.shape)}")
            if _single(mod.dilation, "dilation", label) != 1:
                raise UserError(f"{label}: dilated convolutions are not supported")
            groups = mod.groups
            kind = "dwconv" if groups == mod.in_channels and groups > 1 else "conv"
            records.append(Operation(
                label, kind, batch=x.shape[0], out_ch=mod.out_channels, in_ch=mod.in_channels,
                in_h=x.shape[2], in_w=x.shape[3], kernel_h=mod.kernel_size[0],
                kernel_w=mod.kernel_size[1], stride=_single(mod.stride, "stride", label),
                padding=_single(mod.padding, "padding", label), groups=groups))
        return hook

    def linear_hook(mod_name):
        def hook(mod, args, output):
            x = args[0]
            label = op_name(mod_name)
            batch = x.shape[0] if x.dim() >= 2 else 1
            rows = math.prod(x.shape[1:-1]) if x.dim() >= 2 else 1
            records.append(Operation(label, "gemm", batch=batch, out_ch=mod.out_features,
                                     in_ch=mod.in_features, in_h=rows, in_w=1))
        return hook

    def matmul_hook(mod_name):
        def hook(mod, args, output):
            a, b = args[0], args[1]
            label = op_name(mod_name)
            if a.dim() < 3 or b.dim() != a.dim() or a.shape[:-2] != b.shape[:-2] \
                    or a.shape[-1] != b.shape[-2]:
                raise UserError(f"{label}: {mod.workload_kind} expects (batch, heads..., M, K) @ "
                                f"(batch, heads..., K, N), got {tuple(a.shape)} @ {tuple(b.shape)}")
            records.append(Operation(label, mod.workload_kind, batch=a.shape[0],
                                     out_ch=b.shape[-1], in_ch=a.shape[-1], in_h=a.shape[-2],
                                     in_w=1, repeat=math.prod(a.shape[1:-2])))
        return hook

    handles = []
    training = module.training
    module.eval()  # BatchNorm in training mode refuses a batch of one at 1x1; restored below
    try:
        for mod_name, mod in module.named_modules():
            if isinstance(mod, nn.Conv2d):
                handles.append(mod.register_forward_hook(conv_hook(mod_name)))
            elif isinstance(mod, nn.Linear):
                handles.append(mod.register_forward_hook(linear_hook(mod_name)))
            elif getattr(mod, "workload_kind", None) in ("attn_scores", "attn_context"):
                handles.append(mod.register_forward_hook(matmul_hook(mod_name)))
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        with torch.no_grad():
            module(*args)
    finally:
        for handle in handles:
            handle.remove()
        module.train(training)
    if not records:
        raise UserError(f"{name}: no Conv2d, Linear or attention MatMul ran in the forward pass")
    return Workload(name, tuple(records))


# --- the known networks -------------------------------------------------------------------------

_DESCRIPTIONS = {
    "resnet50": "ResNet-50, ImageNet 224x224: 53 convolutions + fc (~4.1 GMACs)",
    "mobilenet_v2": "MobileNetV2 width 1.0, ImageNet 224x224, depthwise as groups=in_ch "
                    "(~300 MMACs)",
    "deit_tiny": "DeiT-Tiny 224x224: 16x16 patches, 197 tokens, dim 192, 12 layers, 3 heads "
                 "(~1.26 GMACs)",
    "bert_base_layer": "one BERT-base encoder layer: seq 128, hidden 768, 12 heads, FFN 3072",
    "digits_vit": "the built-in default: tiny ViT on 8x8 digits, 17 tokens, D=64, 4 heads, "
                  "2 layers",
}
_ALIASES = {"default": "digits_vit"}


def workload_names():
    """The names :func:`get_workload` accepts (``default`` is the digits ViT)."""
    return sorted(list(_DESCRIPTIONS) + list(_ALIASES))


def describe(name):
    """A one-line description of a known workload."""
    return _DESCRIPTIONS[_resolve(name)]


def _resolve(name):
    if not isinstance(name, str):
        raise UserError(f"workload name must be a string, not {name!r}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key in _DESCRIPTIONS:
        return key
    close = difflib.get_close_matches(key, workload_names(), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UserError(f"unknown workload {name!r}.{hint} Known workloads: "
                    f"{', '.join(workload_names())}")


@functools.lru_cache(maxsize=None)
def _extract(key):
    import torch
    from . import networks
    with torch.device("meta"):  # shapes only: no weights allocated, no arithmetic done
        module, shape = getattr(networks, key)()
        example = torch.zeros(shape)
    return from_module(module, example, key)


def get_workload(name, batch=1):
    """The workload of a known network at batch size ``batch``.

    Raises :class:`UserError` naming the known workloads when ``name`` is not one of them.
    """
    batch = _check_batch(batch)
    workload = _extract(_resolve(name))
    return workload if batch == 1 else workload.with_batch(batch)


# --- a readable table ---------------------------------------------------------------------------

def _si(value):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def format_table(workload):
    """A table with one row per operation and a totals line; accepts a Workload or a name."""
    if isinstance(workload, str):
        workload = get_workload(workload)
    header = ("#", "name", "kind", "input CxHxW", "output KxHxW", "kernel", "str", "pad", "grp",
              "rep", "GEMM MxKxN x count", "MACs", "weights")
    rows = []
    for i, op in enumerate(workload.ops):
        m, k, n, count = op.gemm_view
        rows.append((str(i), op.name, op.kind,
                     f"{op.batch}x{op.in_ch}x{op.in_h}x{op.in_w}" if op.batch > 1
                     else f"{op.in_ch}x{op.in_h}x{op.in_w}",
                     f"{op.out_ch}x{op.out_h}x{op.out_w}",
                     f"{op.kernel_h}x{op.kernel_w}", str(op.stride), str(op.padding),
                     str(op.groups), str(op.repeat), f"{m}x{k}x{n} x{count}",
                     _si(op.macs), _si(op.weight_bytes)))
    widths = [max(len(h), *(len(r[c]) for r in rows)) if rows else len(h)
              for c, h in enumerate(header)]
    left = {1, 2}  # text columns align left, numbers right

    def line(cells):
        return "  ".join(c.ljust(w) if j in left else c.rjust(w)
                         for j, (c, w) in enumerate(zip(cells, widths))).rstrip()

    kinds = {}
    for op in workload.ops:
        kinds[op.kind] = kinds.get(op.kind, 0) + 1
    out = [f"workload {workload.name}: {len(workload)} operations "
           f"({', '.join(f'{v} {k}' for k, v in kinds.items())})",
           line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    total = (f"total: {len(workload)} operations, {workload.macs:,} MACs ({_si(workload.macs)}), "
             f"weights {workload.param_bytes:,} bytes ({_si(workload.param_bytes)}B) INT8")
    dynamic = workload.weight_bytes - workload.param_bytes
    if dynamic:
        total += f" + attention K/V operands {dynamic:,} bytes ({_si(dynamic)}B)"
    out.append(total)
    return "\n".join(out)
