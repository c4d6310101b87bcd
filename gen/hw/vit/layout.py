"""Host side of the ViT engines: what a design is generated for, its memory maps, and the
load beats (weights, parameters, programs) of an all-integer model (docs/vit.md).

:class:`ViTDesign` is the design without hardware (like
:class:`~gen.hw.attention.AttentionGeometry` for one kernel): the sizes, the two engines'
geometries and shapes, the amem regions. :func:`model_image` turns the exported model of
docs/vit.md section 2 (``IntViT.arrays()``) into the load beats of both engines, refusing
with one :class:`~gen.errors.UserError` line a model the design was not generated for.
"""

from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from ...errors import UserError
from ..attention.geometry import MATRICES, TARGET_AMEM, AttentionGeometry, ceil_div
from ..attention_layout import (BlockSparse, layer_program, linear_op, matrix_loads,
                                pack_activation_words, pack_fields)
from .engine import (PROGRAM_OVERHEAD_CYCLES, STEP_DESC, STEP_END, STEP_IMAGE, STEP_RECEIVE,
                     STEP_RESULT, STEP_SEND, TARGET_ACT, TARGET_ENTRY, TARGET_LN, TARGET_PROGRAM,
                     EngineShape, Step)
from .layernorm import LN_MULTIPLIERS, LnParams
from .residual import RESIDUAL_MULTIPLIERS_PER_LANE, ResidualParams

__all__ = ["ViTDesign", "fifo_depth_problem", "EngineImage", "ModelImage", "model_image", "capacity_of",
           "image_beats", "IMAGE_SIDE", "PATCH_SIDE"]

IMAGE_SIDE = 8
PATCH_SIDE = 2
ATTENTION = ("q", "k", "v", "o")
FFN = ("fc1", "fc2")


def image_beats(pixels):
    """The 64 pixel beats of one image (``[8, 8]`` ints 0..16) in the order the engine packs
    them: 2x2 patches in raster order, each patch's pixels in raster order."""
    p = np.asarray(pixels)
    if p.shape != (IMAGE_SIDE, IMAGE_SIDE):
        raise UserError(f"an image must be {IMAGE_SIDE}x{IMAGE_SIDE} pixels, not "
                        f"{'x'.join(map(str, p.shape))}")
    if not np.issubdtype(p.dtype, np.integer) or p.min() < 0 or p.max() > 16:
        raise UserError("image pixels must be integers 0..16 (scikit-learn digits' values)")
    n = IMAGE_SIDE // PATCH_SIDE
    patches = p.reshape(n, PATCH_SIDE, n, PATCH_SIDE).transpose(0, 2, 1, 3)
    return [int(v) for v in patches.reshape(-1)]


def _sparse(matrix, lanes):
    return BlockSparse.from_dense(matrix["w"], lanes, matrix["bias"], matrix["mult"],
                                  matrix["shift"])


def capacity_of(arrays, lanes, nmp_lanes=None):
    """Per matrix of an encoder layer, the most weight words any layer of ``arrays`` keeps
    with ``lanes`` lanes (the capacity to generate the engines with).

    ``nmp_lanes`` (None or 0: ``lanes``) is the NMP engine's lane count: the FFN matrices
    (``fc1``, ``fc2``, held by the NMP) are counted in blocks of that width, the attention
    matrices (the NSA's) in blocks of ``lanes``."""
    nmp_lanes = nmp_lanes or lanes
    out = {}
    for name in MATRICES:
        width = nmp_lanes if name in FFN else lanes
        out[name] = max(sum(len(r) for r in _sparse(layer[name], width).rows)
                        for layer in arrays["layers"])
    return out


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"vit design field {name} must be a non-negative integer, "
                        f"not {value!r}")


def fifo_depth_problem(images_in_flight, fifo_depth, message_beats):
    """What is wrong with FIFOs of ``fifo_depth`` pairs in the ring of two engines with
    ``images_in_flight`` images and messages of ``message_beats`` pairs, or None
    (docs/vit.md section 3).

    An engine takes a message only when its program is idle, so a FIFO is useful in whole
    messages, ``w = floor(depth / message)``. Deadlock: both engines send into full FIFOs at
    once, which needs ``2 + 2 w`` images in the ring; free of it iff ``n <= 2 w + 1``.
    Starving: an engine whose SEND finds its FIFO full waits, idle, though it has finished
    its work; with one image in each engine up to ``n - 2`` messages wait in one FIFO, so no
    SEND ever waits iff ``w >= n - 1`` (the busier engine then never stalls, and the
    throughput model's ``max`` of the two engines holds). The second implies the first.
    """
    whole = fifo_depth // message_beats
    need = max(images_in_flight - 1, 1) * message_beats
    if images_in_flight > 2 * whole + 1:
        return (f"{fifo_depth} can deadlock with {images_in_flight} images in "
                f"flight (a message is {message_beats} pairs); use fifo_depth >= {need}")
    if whole < images_in_flight - 1:
        return (f"{fifo_depth} can stall an engine with {images_in_flight} images "
                f"in flight (a FIFO must hold {images_in_flight - 1} messages of "
                f"{message_beats} pairs for no SEND to wait); use fifo_depth >= {need}")
    return None


@dataclass(frozen=True)
class ViTDesign:
    """What the two engines are generated for.

    Parameters
    ----------
    lanes : int
        B, MAC lanes of each engine (of the NSA engine when ``nmp_lanes`` is given).
    tokens, dim, heads, ffn, layers, classes : int
        The model's T, D, H, FFN width, encoder layers and classes.
    capacity : dict
        Weight words per matrix (the largest any layer keeps), as :func:`capacity_of`.
    images_in_flight : int
        Images let into the pipeline before the first has left (2 lets both engines work).
    fifo_depth : int
        Element pairs each stream FIFO between the engines holds.
    nmp_lanes : int
        MAC lanes of the NMP engine; 0 (the default): ``lanes``. The messages between the
        engines are element-serial, so the two engines' lane counts are independent; the
        FFN capacities must then be counted with this width (``capacity_of(arrays, lanes,
        nmp_lanes)``, or :meth:`for_model`).
    """
    lanes: int
    tokens: int
    dim: int
    heads: int
    ffn: int
    layers: int
    classes: int
    capacity: object
    images_in_flight: int = 2
    fifo_depth: int = 0
    patch_pixels: int = PATCH_SIDE * PATCH_SIDE
    nmp_lanes: int = 0

    def __post_init__(self):
        for name in ("lanes", "tokens", "dim", "heads", "ffn", "layers", "classes",
                     "images_in_flight", "fifo_depth", "nmp_lanes"):
            _check_count(name, getattr(self, name))
        for name in ("lanes", "tokens", "dim", "heads", "ffn", "layers", "classes",
                     "images_in_flight"):
            if getattr(self, name) < 1:
                raise UserError(f"vit design field {name} must be at least 1")
        patches = (IMAGE_SIDE // PATCH_SIDE) ** 2
        if self.tokens != patches + 1:
            raise UserError(f"vit design field tokens must be {patches + 1} (16 patches of an "
                            f"8x8 image and the class token), not {self.tokens}")
        capacity = dict(self.capacity)
        if set(capacity) != set(MATRICES):
            raise UserError(f"vit design capacity must name {list(MATRICES)}")
        object.__setattr__(self, "capacity", MappingProxyType(capacity))
        if self.fifo_depth == 0:
            object.__setattr__(self, "fifo_depth", self.message_beats)
        self.check_deadlock()

    @classmethod
    def for_model(cls, arrays, lanes, nmp_lanes=0, **kwargs):
        """The design of the exported model ``arrays`` (docs/vit.md section 2): its sizes,
        and the capacities it keeps with ``lanes`` (NSA) and ``nmp_lanes`` (NMP; 0: the
        same) lanes. ``kwargs``: the other fields (``images_in_flight``, ``fifo_depth``)."""
        dims = arrays["dims"]
        _check_count("lanes", lanes)
        _check_count("nmp_lanes", nmp_lanes)
        if lanes < 1:
            raise UserError("vit design field lanes must be at least 1")
        return cls(lanes=lanes, nmp_lanes=nmp_lanes, tokens=int(dims["tokens"]),
                   dim=int(dims["dim"]), heads=int(dims["heads"]), ffn=int(dims["ffn"]),
                   layers=int(dims["layers"]), classes=int(dims["classes"]),
                   capacity=capacity_of(arrays, lanes, nmp_lanes or None), **kwargs)

    def lanes_of(self, part):
        """MAC lanes of engine ``part`` ("nsa": ``lanes``; "nmp": ``nmp_lanes or lanes``)."""
        if part not in ("nsa", "nmp"):
            raise UserError(f"engine must be nsa or nmp, not {part!r}")
        return (self.nmp_lanes or self.lanes) if part == "nmp" else self.lanes

    # -- the deadlock rule (docs/vit.md section 3) ------------------------------------------
    @property
    def message_beats(self):
        """Element pairs of one message (a whole half-layer's residual stream): T * D."""
        return self.tokens * self.dim

    def check_deadlock(self):
        """Refuse FIFOs that can deadlock the ring or stall its busier engine
        (:func:`fifo_depth_problem`)."""
        problem = fifo_depth_problem(self.images_in_flight, self.fifo_depth, self.message_beats)
        if problem:
            raise UserError(f"vit fifo_depth {problem}")

    # -- amem regions beyond the kernel's ----------------------------------------------------
    @property
    def _extra_regions(self):
        b, t, d = self.lanes_of("nsa"), self.tokens, self.dim
        sd = ceil_div(d, b)
        return {"nsa": (("res", t, sd), ("patch", t - 1, ceil_div(self.patch_pixels, b)),
                        ("e", t, sd), ("pos", t, sd), ("logits", 1, ceil_div(self.classes, b))),
                "nmp": (("res", t, ceil_div(d, self.lanes_of("nmp"))),)}

    def _plain_geometry(self, part):
        used = ATTENTION if part == "nsa" else FFN
        cap = {name: (self.capacity[name] if name in used else 0) for name in MATRICES}
        return AttentionGeometry(lanes=self.lanes_of(part), tokens=self.tokens, dim=self.dim,
                                 heads=self.heads, ffn=self.ffn, capacity=cap)

    def _layer_footprint(self, part):
        g = self._plain_geometry(part)
        return {"wmem": g.wmem_map["keys"][0] + self.tokens, "pmem": g.pmem_depth,
                "qmem": g.qmem_depth}

    def _extras(self, part):
        """Words of wmem, pmem, qmem after the layers: the embedding and the head (NSA)."""
        if part != "nsa":
            return {"wmem": 0, "pmem": 0, "qmem": 0}
        b = self.lanes_of("nsa")
        blocks_d, blocks_c = ceil_div(self.dim, b), ceil_div(self.classes, b)
        return {"wmem": self.patch_pixels * blocks_d + self.dim * blocks_c,
                "pmem": blocks_d + blocks_c, "qmem": self.dim + self.classes}

    def geometry(self, part):
        """The kernel geometry of engine ``part`` ("nsa" or "nmp")."""
        if part not in ("nsa", "nmp"):
            raise UserError(f"engine must be nsa or nmp, not {part!r}")
        plain = self._plain_geometry(part)
        foot, extras = self._layer_footprint(part), self._extras(part)
        depths = {name: self.layers * foot[name] + extras[name] for name in foot}
        extra_amem = sum(rows * stride for _, rows, stride in self._extra_regions[part])
        return AttentionGeometry(
            lanes=self.lanes_of(part), tokens=self.tokens, dim=self.dim, heads=self.heads,
            ffn=self.ffn, capacity=dict(plain.capacity), extra_amem=extra_amem,
            min_depths=depths, activation_tables=self.layers if part == "nmp" else 0)

    def regions(self, part):
        """amem ``{region: (base, stride)}`` of engine ``part``: the kernel's and the extra."""
        g = self.geometry(part)
        out = {name: (base, stride) for name, (base, _, stride) in g.amem_map.items()}
        base = g.amem_map["extra"][0]
        for name, rows, stride in self._extra_regions[part]:
            out[name] = (base, stride)
            base += rows * stride
        return out

    def engine_shape(self, part):
        """The :class:`~gen.hw.vit.engine.EngineShape` of engine ``part``."""
        g = self.geometry(part)
        nsa = part == "nsa"
        steps = self.program_steps(part)
        return EngineShape(g, program_depth=steps, entries=self.layers + 1,
                           ln_params=self.dim * (self.layers + (1 if nsa else 0)),
                           image_pixels=IMAGE_SIDE * IMAGE_SIDE if nsa else 0,
                           classes=self.classes if nsa else 0,
                           images_in_flight=self.images_in_flight if nsa else 1)

    def program_steps(self, part):
        """Program memory depth: the steps of every entry (see :func:`model_image`)."""
        if part == "nsa":
            per_layer = 3 + 3 + 3 * self.heads + 1 + 1          # receive, qkv, heads, o, send
            return 2 + self.layers * (per_layer + 1) + 4 + 1   # image + embed, head, ends
        return self.layers * 5

    # -- resources ---------------------------------------------------------------------------
    def multipliers(self, part=None):
        """18x18 multipliers (ECP5 MULT18X18D) of engine ``part``, or (None) of both: the
        kernel's (``AttentionGeometry.multipliers``: MAC lanes, requantizer, softmax), the
        LayerNorm's (``LN_MULTIPLIERS``) and the one-lane ResidualAdder's."""
        if part is None:
            return self.multipliers("nsa") + self.multipliers("nmp")
        return (self.geometry(part).multipliers + LN_MULTIPLIERS
                + RESIDUAL_MULTIPLIERS_PER_LANE)

    def memories(self, part):
        """``[(name, width, depth, copies)]``: the memories of engine ``part`` that can take
        block RAM (kernel wmem banks, pmem, qmem, amem banks, activation tables, softmax row
        buffer, LayerNorm row buffer and parameters, program, entry table) and the message
        FIFO into it (``to_nsa`` for the NSA, ``to_nmp`` for the NMP)."""
        from ..attention.memory import QUEUE_DEPTH
        from ..requant import RequantParams
        g, shape = self.geometry(part), self.engine_shape(part)
        bank = 512                                    # BankedMemory's bank_words

        def banked(name, width, depth, copies=1):
            out = []
            for k in range(ceil_div(depth, min(bank, depth))):
                out.append((f"{name}[{k}]", width, min(bank, depth - k * bank), copies))
            return out

        mems = banked("wmem", g.weight_word_layout.size, g.wmem_depth)
        mems += [("pmem", g.pointer_layout.size, g.pmem_depth, 1)]
        mems += banked("qmem", RequantParams().size, g.qmem_depth)
        # amem: one write and two read ports, so two copies of every bank.
        mems += banked("amem", 8 * g.lanes, g.amem_depth, copies=2)
        if g.activation_tables:
            mems.append(("act", 8, 256 * g.activation_tables, 1))
        mems += [("softmax_row", 8, g.tokens, 1), ("results", 8 * g.lanes, QUEUE_DEPTH, 1),
                 ("ln_buffer", 8, 2 * self.dim, 1),
                 ("ln_params", LnParams().size, shape.ln_params, 1),
                 ("program", shape.step_layout.size, shape.program_depth, 1),
                 ("entry", shape.pc_bits, shape.entries, 1)]
        # The message FIFO's storage is a BankedMemory too (BlockRamFIFO).
        mems += banked("fifo_in", shape.message_layout.size, self.fifo_depth)
        return mems

    def block_rams(self, part=None):
        """An ESTIMATE of the ECP5 DP16KD (18 Kbit) block RAMs of engine ``part`` (None: both):
        each memory of :meth:`memories` at its best DP16KD aspect ratio, memories under
        ``gen.estimate.BRAM_MIN_BITS`` left to LUT RAM (``gen.estimate.bram_blocks``). Not a
        synthesis result: yosys may pack, split or place memories differently."""
        from ...estimate import bram_blocks
        if part is None:
            return self.block_rams("nsa") + self.block_rams("nmp")
        return sum(copies * bram_blocks(width, depth)
                   for _, width, depth, copies in self.memories(part))


@dataclass
class EngineImage:
    """Load beats of one engine (``(target, addr, data)``) and its program, as fields.

    ``mac_steps[pc]``: for a DESC step, the inner-loop length of each group (None for a
    softmax op and for the other steps); ``entries``: ``{tag: pc}``."""
    loads: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    entries: dict = field(default_factory=dict)
    mac_steps: list = field(default_factory=list)

    def entry_steps(self, tag):
        """The pcs of the program that ``entry[tag]`` runs, up to its END."""
        pc = self.entries[tag]
        out = []
        while self.steps[pc]["kind"] != STEP_END:
            out.append(pc)
            pc += 1
        return out

    def step_cycles(self, design, pc, geometry):
        """Model cycles of step ``pc`` (``gen.cycles``: kernel ops exact, row steps a model)."""
        from ...cycles import VIT_STEP_OVERHEAD, vit_row_step_cycles
        from ..attention.geometry import OP_SOFTMAX
        st = self.steps[pc]
        kind = st["kind"]
        if kind == STEP_DESC:
            fields = geometry.descriptor_layout
            desc = {name: (st["desc"] >> f.offset) & ((1 << f.width) - 1)
                    for name, f in fields}
            if desc["op"] == OP_SOFTMAX:
                op = geometry.softmax_op_cycles(desc["rows"], desc["n_hi"])
            else:
                b = geometry.lanes
                last = min(b, desc["n_hi"] - (desc["c_hi"] - 1) * b)
                op = geometry.mac_op_cycles(self.mac_steps[pc], last)
            return op + VIT_STEP_OVERHEAD
        names = {STEP_RECEIVE: "receive", STEP_SEND: "send", STEP_IMAGE: "image",
                 STEP_RESULT: "result"}
        return vit_row_step_cycles(names[kind], rows=st["rows"], cols=st["cols"],
                                   lanes=geometry.lanes, dim=design.dim,
                                   local=bool(st.get("local", 0)))

    def entry_cycles(self, design, tag, geometry):
        """Model cycles of one run of ``entry[tag]`` (a half-layer), END and the entry lookup
        included."""
        return sum(self.step_cycles(design, pc, geometry)
                   for pc in self.entry_steps(tag)) + PROGRAM_OVERHEAD_CYCLES

    def lane_products(self, tag):
        """Lane products the MAC ops of ``entry[tag]`` issue (B per beat)."""
        return sum(sum(self.mac_steps[pc]) for pc in self.entry_steps(tag)
                   if self.mac_steps[pc] is not None)


@dataclass
class ModelImage:
    """Both engines' images of one model on one design."""
    design: ViTDesign
    nsa: EngineImage
    nmp: EngineImage


def _ln_loads(design, base, ln, where):
    words = []
    for j in range(design.dim):
        fields = {"neg": int(ln["neg"][j]), "bias": int(ln["bias"][j]) & 0xFFFFFFFF,
                  "mult": int(ln["mult"][j]), "shift": int(ln["shift"][j])}
        try:
            words.append((TARGET_LN, base + j, pack_fields(LnParams(), fields)))
        except UserError as exc:
            raise UserError(f"model {where}: {exc}") from None
    return words


def _radd(radd, where):
    try:
        return pack_fields(ResidualParams(), {k: int(radd[k]) for k in ("ma", "mb", "shift")})
    except UserError as exc:
        raise UserError(f"model {where}: {exc}") from None


def _check_dims(design, arrays):
    dims = arrays.get("dims", {})
    for name in ("tokens", "dim", "heads", "ffn", "layers", "classes", "patch_pixels"):
        if int(dims.get(name, -1)) != getattr(design, name):
            raise UserError(f"the model's dims.{name} is {dims.get(name)!r}, the design was "
                            f"generated for {getattr(design, name)}; regenerate the design "
                            f"from this model")


def model_image(design, arrays):
    """The load beats of both engines for the exported model ``arrays`` (docs/vit.md 2)."""
    _check_dims(design, arrays)
    t, d = design.tokens, design.dim
    images = {}
    for part in ("nsa", "nmp"):
        b = design.lanes_of(part)
        g = design.geometry(part)
        shape = design.engine_shape(part)
        step_layout = Step(shape)
        regions = design.regions(part)
        foot = design._layer_footprint(part)
        image = EngineImage()
        prog = []

        def step(kind, **fields):
            desc = fields.pop("desc", None)
            if desc is not None:
                fields["desc"] = pack_fields(g.descriptor_layout, desc[0])
                image.mac_steps.append(desc[1])
            else:
                image.mac_steps.append(None)
            prog.append(dict(kind=kind, **fields))

        rows_of = lambda name, rows, cols: dict(rows=rows, cols=cols, words=ceil_div(cols, b),
                                                stride=regions[name][1])

        def receive(radd, ln_base, where, local=False, a=None, b_=None, x="res", n="x"):
            step(STEP_RECEIVE, local=int(local), ln=1, x_base=regions[x][0],
                 n_base=regions[n][0], a_base=regions[a][0] if a else 0,
                 b_base=regions[b_][0] if b_ else 0, count=t * d, ln_base=ln_base,
                 radd=_radd(radd, where), **rows_of(x, t, d))

        def layer_ops(l):
            layer = arrays["layers"][l]
            mats = {name: _sparse(layer[name], b) for name in MATRICES}
            lp = layer_program(
                g, mats, tokens=t, parts=("attention",) if part == "nsa" else ("ffn",),
                score_requant=tuple(int(v) for v in layer["scores"]),
                context_requant=tuple(int(v) for v in layer["context"]),
                kept_features=[[int(f) for f in feats] for feats in layer["kept_features"]],
                offsets={k: l * foot[k] for k in foot}, regions=regions, table=l)
            image.loads.extend(lp.loads)
            for fields, steps in zip(lp.attention + lp.ffn, lp.mac_steps):
                step(STEP_DESC, desc=(fields, steps))

        if part == "nsa":
            layers_w = design.layers * foot["wmem"]
            layers_p = design.layers * foot["pmem"]
            layers_q = design.layers * foot["qmem"]
            embed = _sparse(arrays["embed"], b)
            head = _sparse(arrays["head"], b)
            loads, embed_counts = matrix_loads(g, embed, layers_w, layers_p, layers_q)
            image.loads.extend(loads)
            embed_words = sum(embed_counts)
            loads, head_counts = matrix_loads(g, head, layers_w + embed_words,
                                              layers_p + ceil_div(d, b), layers_q + d)
            image.loads.extend(loads)
            e_base, e_stride = regions["e"]
            # Row 0 of E is the class token; rows 1..16 the patches' embedding.
            cls = np.asarray(arrays["cls"], dtype=np.int64).reshape(1, d)
            for w, word in enumerate(pack_activation_words(cls, b, e_stride)):
                image.loads.append((TARGET_AMEM, e_base + w, word))
            pos_base, pos_stride = regions["pos"]
            pos = np.asarray(arrays["pos"], dtype=np.int64)
            for w, word in enumerate(pack_activation_words(pos, b, pos_stride)):
                image.loads.append((TARGET_AMEM, pos_base + w, word))
            for l in range(design.layers + 1):
                ln = arrays["layers"][l]["ln1"] if l < design.layers else arrays["ln_f"]
                image.loads.extend(_ln_loads(design, l * d, ln,
                                             f"layers[{l}].ln1" if l < design.layers
                                             else "ln_f"))

            # Entry 0: a new image: pixels -> patches, embedding, x_0 = pos + E, layer 0.
            image.entries[0] = len(prog)
            step(STEP_IMAGE, x_base=regions["patch"][0],
                 **rows_of("patch", t - 1, design.patch_pixels))
            step(STEP_DESC, desc=linear_op(
                g, (design.patch_pixels, d), embed_counts, rows=t - 1, src=regions["patch"],
                dst=(e_base + e_stride, e_stride), ptr_base=layers_p, q_base=layers_q))
            for l in range(design.layers):
                if l:
                    image.entries[l] = len(prog)
                    receive(arrays["layers"][l]["add1"], l * d, f"layers[{l}].add1")
                else:
                    receive(arrays["layers"][0]["add1"], 0, "layers[0].add1", local=True,
                            a="pos", b_="e")
                layer_ops(l)
                step(STEP_SEND, a_base=regions["res"][0], b_base=regions["z"][0], tag=l,
                     **rows_of("res", t, d))
                step(STEP_END)
            # Entry L: the head: x_L = y + F, LN_f, logits of the class token, result.
            image.entries[design.layers] = len(prog)
            receive(arrays["add_f"], design.layers * d, "add_f")
            logits = regions["logits"]
            step(STEP_DESC, desc=linear_op(
                g, (d, design.classes), head_counts, rows=1, src=regions["x"], dst=logits,
                ptr_base=layers_p + ceil_div(d, b), q_base=layers_q + d))
            step(STEP_RESULT, a_base=logits[0], **rows_of("logits", 1, design.classes))
            step(STEP_END)
        else:
            for l in range(design.layers):
                layer = arrays["layers"][l]
                image.loads.extend(_ln_loads(design, l * d, layer["ln2"], f"layers[{l}].ln2"))
                table = np.asarray(layer["act"], dtype=np.int64)
                if table.shape != (256,):
                    raise UserError(f"model layers[{l}].act must have 256 entries, not "
                                    f"{table.shape}")
                image.loads.extend((TARGET_ACT, 256 * l + v, int(table[v]) & 0xFF)
                                   for v in range(256))
                image.entries[l] = len(prog)
                receive(layer["add2"], l * d, f"layers[{l}].add2", n="x2")
                layer_ops(l)
                step(STEP_SEND, a_base=regions["res"][0], b_base=regions["f"][0], tag=l + 1,
                     **rows_of("res", t, d))
                step(STEP_END)

        if len(prog) > shape.program_depth:
            raise AssertionError(f"{part} program has {len(prog)} steps, "
                                 f"the design {shape.program_depth}")
        for pc, fields in enumerate(prog):
            image.loads.append((TARGET_PROGRAM, pc, pack_fields(step_layout, fields)))
        for tag, pc in image.entries.items():
            image.loads.append((TARGET_ENTRY, tag, pc))
        image.steps = prog
        images[part] = image
    return ModelImage(design, images["nsa"], images["nmp"])
