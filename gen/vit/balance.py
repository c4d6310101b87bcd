"""Lane balance of the two ViT engines (docs/vit.md section 4) as a search.

With two images in flight the ring runs at the pace of the busier engine, so an image costs
``max(NSA cycles, NMP cycles)``; each engine's cycles depend only on its own lane count (the
messages between the engines are element-serial). :func:`balance` evaluates every engine at
every lane count of ``lanes_range`` once (the throughput model of
:meth:`gen.hw.vit.layout.EngineImage.entry_cycles` on the model's real load image: kernel ops
exact, row steps modelled, within 1 % of Verilator on the digits ViT), combines the pairs
``(nsa_lanes, nmp_lanes)`` and picks the fewest cycles an image whose multipliers fit the
budget (ties: fewer multipliers, then fewer block RAMs, then fewer lanes).

:func:`predicted_engine` is the same model for a model *shape* without weights (every column
block keeps the same number of rows): the cycle counts of a design that is not generated, e.g.
DeiT-Tiny, which ``ViTDesign`` refuses (it is generated for the 8x8 digits only). It is
checked against :func:`gen.hw.vit.layout.model_image` on dense models
(``tests/test_vit_balance.py``).
"""

from dataclasses import asdict, dataclass

from ..errors import UserError

__all__ = ["ULX3S_85F_MULTIPLIERS", "ULX3S_85F_BLOCK_RAMS", "CLOCK_MHZ", "EngineCost",
           "LanePoint", "Balance", "balance", "balance_costs", "model_costs",
           "predicted_engine", "predicted_costs", "predicted_balance", "engine_multipliers", "dense_macs", "stream_bytes"]

#: MULT18X18D of the ULX3S's LFE5U-85F.
ULX3S_85F_MULTIPLIERS = 156
#: DP16KD (18 Kbit) block RAMs of the LFE5U-85F.
ULX3S_85F_BLOCK_RAMS = 208
#: The clock the images/s figures are given at (the project's Fmax goal; a what-if: no
#: bitstream of the ViT design has been built).
CLOCK_MHZ = 100.0

PARTS = ("nsa", "nmp")


@dataclass(frozen=True)
class EngineCost:
    """One engine at one lane count, per image: model cycles, MAC beats (each beat keeps all
    ``lanes`` lanes busy), 18x18 multipliers and block RAMs (an estimate; None if unknown)."""
    lanes: int
    cycles: int
    beats: int
    multipliers: int
    block_rams: object = None

    @property
    def lane_products(self):
        return self.beats * self.lanes


@dataclass(frozen=True)
class LanePoint:
    """A lane pair and what the model says of it (per image)."""
    nsa: EngineCost
    nmp: EngineCost
    images_in_flight: int = 2

    @property
    def nsa_lanes(self):
        return self.nsa.lanes

    @property
    def nmp_lanes(self):
        return self.nmp.lanes

    @property
    def cycles(self):
        """Cycles an image: the busier engine's with two or more in flight, else the sum."""
        if self.images_in_flight >= 2:
            return max(self.nsa.cycles, self.nmp.cycles)
        return self.latency

    @property
    def latency(self):
        """Cycles of one image alone (the engines alternate)."""
        return self.nsa.cycles + self.nmp.cycles

    @property
    def bottleneck(self):
        return "nsa" if self.nsa.cycles >= self.nmp.cycles else "nmp"

    @property
    def multipliers(self):
        return self.nsa.multipliers + self.nmp.multipliers

    @property
    def block_rams(self):
        if self.nsa.block_rams is None or self.nmp.block_rams is None:
            return None
        return self.nsa.block_rams + self.nmp.block_rams

    @property
    def lane_products(self):
        return self.nsa.lane_products + self.nmp.lane_products

    def engine(self, part):
        return {"nsa": self.nsa, "nmp": self.nmp}[part]

    def busy(self, part):
        """Fraction of the pipeline's cycles engine ``part`` is running."""
        return self.engine(part).cycles / self.cycles

    def lanes_busy(self, part):
        """Fraction of the pipeline's cycles engine ``part``'s MAC lanes issue a product."""
        return self.engine(part).beats / self.cycles

    def images_per_s(self, clock_mhz=CLOCK_MHZ):
        return clock_mhz * 1e6 / self.cycles

    def key(self):
        br = self.block_rams
        return (self.cycles, self.multipliers, br if br is not None else 0, self.nsa_lanes,
                self.nmp_lanes)

    def as_dict(self, clock_mhz=CLOCK_MHZ):
        return {"nsa_lanes": self.nsa_lanes, "nmp_lanes": self.nmp_lanes,
                "cycles": self.cycles, "latency": self.latency, "bottleneck": self.bottleneck,
                "images_per_s_what_if": self.images_per_s(clock_mhz),
                "multipliers": self.multipliers, "block_rams_estimate": self.block_rams,
                "lane_products": self.lane_products,
                **{f"{p}_{k}": v for p in PARTS for k, v in asdict(self.engine(p)).items()
                   if k != "lanes"},
                **{f"{p}_busy": self.busy(p) for p in PARTS},
                **{f"{p}_lanes_busy": self.lanes_busy(p) for p in PARTS}}


@dataclass(frozen=True)
class Balance:
    """The search's result: ``best`` (the pick), every pair evaluated (``points``, best
    first) and the constraints."""
    best: LanePoint
    points: tuple
    budget: int
    bram_budget: object = None

    def fits(self, point):
        if point.multipliers > self.budget:
            return False
        if self.bram_budget is not None and point.block_rams is not None:
            return point.block_rams <= self.bram_budget
        return True

    @property
    def fitting(self):
        """The pairs under the budget, best first."""
        return tuple(p for p in self.points if self.fits(p))

    def point(self, nsa_lanes, nmp_lanes):
        for p in self.points:
            if (p.nsa_lanes, p.nmp_lanes) == (nsa_lanes, nmp_lanes):
                return p
        raise KeyError((nsa_lanes, nmp_lanes))

    def engines(self):
        """``{part: {lanes: EngineCost}}``: each engine at every lane count evaluated."""
        out = {part: {} for part in PARTS}
        for p in self.points:
            for part in PARTS:
                out[part][p.engine(part).lanes] = p.engine(part)
        return {part: dict(sorted(v.items())) for part, v in out.items()}

    def as_dict(self, clock_mhz=CLOCK_MHZ, limit=None):
        """The constraints, the pick, the first ``limit`` (None: all) pairs under the budget
        and each engine's cost at every lane count."""
        return {"budget_multipliers": self.budget, "budget_block_rams": self.bram_budget,
                "best": self.best.as_dict(clock_mhz),
                "fitting": [p.as_dict(clock_mhz) for p in self.fitting[:limit]],
                "engines": {part: {lanes: asdict(c) for lanes, c in costs.items()}
                            for part, costs in self.engines().items()}}


def engine_multipliers(geometry):
    """18x18 multipliers of one engine on kernel ``geometry``: as
    :meth:`gen.hw.vit.layout.ViTDesign.multipliers` (kernel, LayerNorm, one-lane adder)."""
    from ..hw.vit.layernorm import LN_MULTIPLIERS
    from ..hw.vit.residual import RESIDUAL_MULTIPLIERS_PER_LANE
    return geometry.multipliers + LN_MULTIPLIERS + RESIDUAL_MULTIPLIERS_PER_LANE


def model_costs(arrays, lanes, images_in_flight=2):
    """``{part: EngineCost}`` of both engines with ``lanes`` lanes for the exported model
    ``arrays`` (docs/vit.md section 2), from its real load image; block RAMs estimated
    (:meth:`~gen.hw.vit.layout.ViTDesign.block_rams`)."""
    from ..hw.vit.layout import ViTDesign, model_image
    design = ViTDesign.for_model(arrays, lanes, images_in_flight=images_in_flight)
    image = model_image(design, arrays)
    out = {}
    for part, eng in (("nsa", image.nsa), ("nmp", image.nmp)):
        g = design.geometry(part)
        out[part] = EngineCost(
            lanes=lanes,
            cycles=sum(eng.entry_cycles(design, tag, g) for tag in eng.entries),
            beats=sum(eng.lane_products(tag) for tag in eng.entries),
            multipliers=design.multipliers(part), block_rams=design.block_rams(part))
    return out


def balance_costs(costs, budget, *, bram_budget=None, images_in_flight=2):
    """The search over per-lane costs ``costs`` (``{lanes: {part: EngineCost}}``): every
    ``(nsa_lanes, nmp_lanes)`` pair, the pick as :func:`balance` describes."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UserError(f"multiplier budget must be a positive integer, not {budget!r}")
    points = sorted((LanePoint(costs[a]["nsa"], costs[b]["nmp"], images_in_flight)
                     for a in costs for b in costs), key=LanePoint.key)
    if not points:
        raise UserError("no lane count of lanes_range gives a design")
    result = Balance(best=None, points=tuple(points), budget=budget, bram_budget=bram_budget)
    fitting = result.fitting
    if not fitting:
        least = min(points, key=lambda p: p.multipliers)
        raise UserError(f"no lane pair fits {budget} multipliers"
                        + (f" and {bram_budget} block RAMs" if bram_budget is not None else "")
                        + f"; the smallest ({least.nsa_lanes}, {least.nmp_lanes}) needs "
                        f"{least.multipliers} multipliers"
                        + (f" and {least.block_rams} block RAMs"
                           if least.block_rams is not None else ""))
    return Balance(best=fitting[0], points=result.points, budget=budget,
                   bram_budget=bram_budget)


def balance(arrays, budget=ULX3S_85F_MULTIPLIERS, lanes_range=range(2, 65), *,
            bram_budget=None, images_in_flight=2):
    """The lane pair ``(nsa_lanes, nmp_lanes)`` with the fewest model cycles an image for the
    exported model ``arrays`` whose engines' multipliers (kernel, LayerNorm, adder) fit
    ``budget`` (and, if given, whose estimated block RAMs fit ``bram_budget``).

    Returns a :class:`Balance`; ``best.nsa_lanes`` / ``best.nmp_lanes`` are the fields of
    :class:`~gen.hw.vit.layout.ViTDesign` (``lanes``, ``nmp_lanes``) to generate. A lane count
    the design refuses is skipped; no pair under the budget is a :class:`UserError`.
    """
    costs = {}
    for lanes in lanes_range:
        try:
            costs[int(lanes)] = model_costs(arrays, int(lanes), images_in_flight)
        except UserError:
            continue
    return balance_costs(costs, budget, bram_budget=bram_budget,
                         images_in_flight=images_in_flight)


# -- a model shape without weights (a design that is not generated) ------------------------------

def _dims(dims):
    return {k: int(dims[k]) for k in ("tokens", "dim", "heads", "ffn", "layers", "classes",
                                      "patch_pixels")}


def _kept(keep, k):
    if not 0 <= keep <= 1:
        raise UserError(f"keep must be a fraction 0..1 of the rows a block keeps, not {keep}")
    return int(round(keep * k))


def predicted_engine(dims, lanes, part, keep=1.0):
    """:class:`EngineCost` (block RAMs None) of engine ``part`` with ``lanes`` lanes for a
    model of shape ``dims`` (the keys of docs/vit.md section 2's ``dims``) whose every column
    block keeps ``round(keep * K)`` of its ``K`` rows and whose every head keeps all its
    features: the op sequence of :func:`gen.hw.vit.layout.model_image` (embedding, layers,
    head, each step plus ``VIT_STEP_OVERHEAD``, row steps by ``vit_row_step_cycles``, kernel
    ops by the geometry's exact ``mac_op_cycles`` / ``softmax_op_cycles``), without weights.
    """
    from ..cycles import VIT_STEP_OVERHEAD, vit_row_step_cycles
    from ..hw.vit.engine import PROGRAM_OVERHEAD_CYCLES
    from ..hw.attention.geometry import AttentionGeometry, ceil_div
    dm = _dims(dims)
    if part not in PARTS:
        raise UserError(f"engine must be nsa or nmp, not {part!r}")
    t, d, h, f, layers = dm["tokens"], dm["dim"], dm["heads"], dm["ffn"], dm["layers"]
    b = int(lanes)
    g = AttentionGeometry(lanes=b, tokens=t, dim=d, heads=h, ffn=f,
                          activation_tables=layers if part == "nmp" else 0)
    beats = [0]

    def mac(steps, n_hi, c_hi):
        beats[0] += sum(steps)
        return g.mac_op_cycles(steps, min(b, n_hi - (c_hi - 1) * b)) + VIT_STEP_OVERHEAD

    def linear(k, n, rows):
        blocks = ceil_div(n, b)
        return mac([_kept(keep, k)] * (rows * blocks), n, blocks)

    def row(kind, rows, cols, local=False):
        return vit_row_step_cycles(kind, rows=rows, cols=cols, lanes=b, dim=d, local=local)

    def layer_ops():
        if part == "nmp":
            return linear(d, f, t) + linear(f, d, t)
        dh = d // h
        total = sum(linear(d, d, t) for _ in range(3))          # Q, K^T, V
        key_blocks = ceil_div(t, b)
        for head in range(h):
            total += mac([dh] * (t * key_blocks), t, key_blocks)
            total += g.softmax_op_cycles(t, t) + VIT_STEP_OVERHEAD
            c_lo, c_hi = head * dh // b, ceil_div((head + 1) * dh, b)
            total += mac([t] * (t * (c_hi - c_lo)), (head + 1) * dh, c_hi)
        return total + linear(d, d, t)

    end = PROGRAM_OVERHEAD_CYCLES             # as EngineImage.entry_cycles
    # Every layer's ops are the same (equal keep): one layer's cycles and beats, L times.
    one_layer = layer_ops()
    layer_beats, beats[0] = beats[0], 0
    half = row("send", t, d) + end
    if part == "nmp":
        cycles = layers * (row("receive", t, d) + one_layer + half)
    else:
        pp = dm["patch_pixels"]
        cycles = (row("image", t - 1, pp) + linear(pp, d, t - 1)
                  + row("receive", t, d, local=True) + one_layer + half
                  + (layers - 1) * (row("receive", t, d) + one_layer + half)
                  + row("receive", t, d) + linear(d, dm["classes"], 1)
                  + row("result", 1, dm["classes"]) + end)
    return EngineCost(lanes=b, cycles=cycles, beats=beats[0] + layers * layer_beats,
                      multipliers=engine_multipliers(g))


def predicted_costs(dims, lanes, keep=1.0):
    """``{part: EngineCost}`` of :func:`predicted_engine` for both engines."""
    return {part: predicted_engine(dims, lanes, part, keep) for part in PARTS}


def predicted_balance(dims, budget=ULX3S_85F_MULTIPLIERS, lanes_range=range(2, 65), *,
                      keep=1.0, images_in_flight=2):
    """:func:`balance` for a model shape without weights (:func:`predicted_engine`; no block
    RAM estimate, so only the multiplier budget). A lane count the kernel geometry refuses
    is skipped."""
    costs = {}
    for lanes in lanes_range:
        try:
            costs[int(lanes)] = predicted_costs(dims, int(lanes), keep)
        except UserError:
            continue
    return balance_costs(costs, budget, images_in_flight=images_in_flight)


def dense_macs(dims):
    """Useful MACs of one image of the dense model: embedding, per layer Q K V O, scores,
    context, FC1, FC2, and the head on the class token."""
    dm = _dims(dims)
    t, d, f, layers = dm["tokens"], dm["dim"], dm["ffn"], dm["layers"]
    per_layer = 4 * t * d * d + 2 * t * t * d + 2 * t * d * f
    return (t - 1) * dm["patch_pixels"] * d + layers * per_layer + d * dm["classes"]


def stream_bytes(dims, lanes, nmp_lanes=None, keep=1.0):
    """Bytes of one pass over every parameter in the engines' own formats (what a design that
    streams its weights from off-chip memory would read per weight pass): per matrix its kept
    weight words (``WeightWord``: B bytes and the row index), block pointers and
    requantization entries; the LayerNorm parameters, activation tables, class token and
    position table. Returns ``{"total", "int8_weights", "nsa", "nmp"}``."""
    from ..hw.attention.geometry import AttentionGeometry, ceil_div
    from ..hw.requant import RequantParams
    from ..hw.vit.layernorm import LnParams
    dm = _dims(dims)
    t, d, h, f, layers, c = (dm[k] for k in ("tokens", "dim", "heads", "ffn", "layers",
                                               "classes"))
    requant, ln = RequantParams().size, LnParams().size
    out = {"int8_weights": 0}
    for part, b in (("nsa", int(lanes)), ("nmp", int(nmp_lanes or lanes))):
        g = AttentionGeometry(lanes=b, tokens=t, dim=d, heads=h, ffn=f)
        word, pointer = g.weight_word_layout.size, g.pointer_layout.size
        shapes = ([(d, d)] * 4 if part == "nsa" else [(d, f), (f, d)]) * layers
        if part == "nsa":
            shapes += [(dm["patch_pixels"], d), (d, c)]
        bits = 0
        for k, n in shapes:
            blocks = ceil_div(n, b)
            words = _kept(keep, k) * blocks
            out["int8_weights"] += _kept(keep, k) * n
            bits += words * word + blocks * pointer + n * requant
        lns = layers + (1 if part == "nsa" else 0)
        bits += lns * d * ln
        if part == "nsa":
            bits += 8 * (d + t * d)                     # class token, position table
        else:
            bits += 8 * 256 * layers                    # activation tables
        out[part] = ceil_div(bits, 8)
    out["total"] = out["nsa"] + out["nmp"]
    return out
