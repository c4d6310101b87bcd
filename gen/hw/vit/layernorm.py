"""Integer LayerNorm unit: rows of ``dim`` INT8 values in, rows of INT8 out (docs/vit.md 1.1).

Per row, exactly as the contract::

    s1 = sum_j x_j;  s2 = sum_j x_j^2;  v = D*s2 - s1^2;  sigma = isqrt(v)
    r = floor(2^30 / sigma) (0 if sigma = 0);  c_i = D*x_i - s1
    u_i = (c_i*r + 2^19) >> 20;  y_i = requant((-u_i if neg_i else u_i) + bias_i, mult_i, shift_i)

Three stages work on three different rows at once:

A. input: each accepted element is written into a row buffer of ``2 * dim`` entries (two rows:
   the double buffer) while ``s1`` and ``s2`` accumulate (``x^2`` on one multiplier);
B. statistics, once per row: ``v`` on one shared multiplier (``s1*s1`` and ``D*s2`` in 17-bit
   chunks, one product per cycle), ``sigma`` by a digit recurrence (one root bit per cycle, no
   multiplier), ``r`` by a restoring divider (one quotient bit per cycle);
C. output: the row is read back in order, ``c = D*x - s1`` (``D*x`` on a multiplier), ``c*r`` on
   two multipliers (``r`` split into 17-bit chunks), rounded and shifted to ``u``, signed by
   ``neg`` and requantized by a `Requantizer`. The whole of C stalls while ``o`` is held.

The buffer is a ring of ``2 * dim`` entries: an entry is free again once stage C has read it,
so row ``k + 2`` enters behind row ``k``'s read-out and the unit sustains one element per cycle
when the statistics fit in a row's time (``dim >= stats_cycles + 5``, about ``dim >= 52``).
"""

import math
import operator
from collections import namedtuple

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ...errors import UserError
from ..multiplier import DSP_PORT_BITS, PipelinedMultiplier
from ..requant import REQUANT_LATENCY, REQUANT_MULTIPLIERS, Requantizer

__all__ = ["LnParams", "IntLayerNorm", "LN_R", "LN_FRAC", "LN_SHIFT", "DIM_MIN", "DIM_MAX",
           "PARAM_DEPTH_MAX", "FRONT_STAGES", "LN_EMIT_LATENCY", "LN_INPUT_STAGES",
           "LN_MULTIPLIERS", "LnGeometry", "ln_geometry"]

#: ``r = floor(2^LN_R / sigma)``; ``u`` carries ``LN_FRAC`` fraction bits.
LN_R = 30
LN_FRAC = 10
#: The shift of ``c * r`` down to ``u``.
LN_SHIFT = LN_R - LN_FRAC
DIM_MIN, DIM_MAX = 2, 256
PARAM_DEPTH_MAX = 2 ** 16
#: Unsigned chunk that fits an 18-bit signed multiplier port.
_CHUNK = DSP_PORT_BITS - 1

#: Stage C's registers from a row-buffer read issue to the requantizer's input: read data, x,
#: D*x multiplier (2), c, c*r multipliers (2), partial-product registers, product, u, +-u.
FRONT_STAGES = 11
#: Cycles from a row-buffer read issue to its output on ``o`` (never stalled).
LN_EMIT_LATENCY = FRONT_STAGES + REQUANT_LATENCY
#: Stage A: the last element accepted to its row's statistics token (x^2 multiplier, s2 add).
LN_INPUT_STAGES = 3
#: 18x18 multipliers of one unit: x^2, the shared statistics multiplier, D*x, two for c*r, and
#: the requantizer's four.
LN_MULTIPLIERS = 3 + 2 + REQUANT_MULTIPLIERS

LnGeometry = namedtuple("LnGeometry", [
    "s1_min", "s1_max", "s2_max", "v_max", "v_bits", "sqrt_steps", "sigma_min", "r_max",
    "quotient_bits", "s2_chunks", "r_chunks", "c_max", "stats_products", "stats_cycles"])


def ln_geometry(dim):
    """Value ranges, register widths and stage-B timing for rows of ``dim`` INT8 values.

    ``v = sum_{i<j} (x_i - x_j)^2`` is 0 or at least ``dim - 1``, so ``sigma`` is 0 or at least
    ``isqrt(dim - 1)``: that bounds ``r`` and the divider's quotient bits. ``v`` is largest with
    half the row at -128 and half at 127: ``floor(dim^2 / 4) * 255^2``.
    """
    s2_max = dim * 128 * 128
    v_max = (dim * dim // 4) * 255 * 255
    v_bits = v_max.bit_length()
    sigma_min = max(1, math.isqrt(dim - 1))
    r_max = (1 << LN_R) // sigma_min
    quotient_bits = r_max.bit_length()
    s2_chunks = [(lo, min(lo + _CHUNK, s2_max.bit_length()))
                 for lo in range(0, s2_max.bit_length(), _CHUNK)]
    r_chunks = [(lo, min(lo + _CHUNK, quotient_bits)) for lo in range(0, quotient_bits, _CHUNK)]
    products = 1 + len(s2_chunks)
    sqrt_steps = (v_bits + 1) // 2
    # The take cycle, the products (issue plus MULTIPLIER_LATENCY), the root bits, the quotient
    # bits; the hand-over cycle follows.
    stats_cycles = 1 + (products + 2) + sqrt_steps + quotient_bits
    return LnGeometry(
        s1_min=-128 * dim, s1_max=127 * dim, s2_max=s2_max, v_max=v_max, v_bits=v_bits,
        sqrt_steps=sqrt_steps, sigma_min=sigma_min, r_max=r_max, quotient_bits=quotient_bits,
        s2_chunks=s2_chunks, r_chunks=r_chunks, c_max=(dim - 1) * 255,
        stats_products=products, stats_cycles=stats_cycles)


class LnParams(data.StructLayout):
    """Per-channel LayerNorm parameters: sign of gamma, INT32 bias, requantizer ``M`` and ``S``."""
    def __init__(self):
        super().__init__({
            "neg":   unsigned(1),
            "bias":  signed(32),
            "mult":  unsigned(31),
            "shift": unsigned(6),
        })


def _check_int(name, value, low, high, hint):
    if isinstance(value, bool):
        raise UserError(f"layernorm {name} must be an integer, not {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise UserError(f"layernorm {name} must be an integer, not {value!r}") from None
    if not low <= value <= high:
        raise UserError(f"layernorm {name} is {value}; choose {low} .. {high} ({hint})")
    return value


class IntLayerNorm(wiring.Component):
    """Row-wise integer LayerNorm (docs/vit.md section 1.1) with per-channel parameters.

    Parameters
    ----------
    dim : int
        Row length ``D`` (2 .. 256).
    param_depth : int
        Words of the parameter memory (``dim`` .. 65536): room for several LayerNorms.

    Members
    -------
    i : ``In(stream.Signature(signed(8)))``
        Rows of ``dim`` elements, one per transfer, row after row (no framing signal).
    o : ``Out(stream.Signature(signed(8)))``
        The LayerNorm outputs in input order. Full back-pressure: the output pipeline stalls
        while ``o`` is held, nothing is dropped.
    param_wr : ``Out(memory.WritePort.Signature(addr_width=param_addr_bits, shape=LnParams()))``
        Write port of the parameter memory (``addr``, ``data``, ``en`` are inputs, as on the
        memory itself; one word per cycle with ``en``). Write the parameters of a row before its read-out begins.
    param_base : ``In(param_addr_bits)``
        Element ``j`` of a row uses word ``param_base + j``; sampled when the row's first
        element is accepted. ``param_base + dim <= param_depth`` is the caller's to keep.
    busy : ``Out(1)``
        High while any element or row is inside the unit.

    Timing (input always valid, output always ready; :func:`gen.cycles.layernorm_cycles` is
    exact): a row takes ``dim`` cycles in each of stages A and C and ``stats_cycles + 1`` in
    stage B, so rows pass at one per ``dim`` cycles (one element per cycle) for
    ``dim >= stats_cycles + 5`` and one per ``stats_cycles + 1`` below; a lone row takes
    ``2 dim + LN_INPUT_STAGES + stats_cycles + LN_EMIT_LATENCY`` cycles from its first element
    accepted to its last output. Input gaps and output stalls add cycle for cycle.
    """

    def __init__(self, dim, param_depth):
        try:
            self._dim = _check_int("dim", dim, DIM_MIN, DIM_MAX, "the row length D")
            self._param_depth = _check_int(
                "param_depth", param_depth, self._dim, PARAM_DEPTH_MAX,
                "parameter words; at least dim, one word per channel")
        except UserError:
            self._MustUse__silence = True    # a refused component is not a forgotten one
            raise
        self._geometry = ln_geometry(self._dim)
        super().__init__({
            "i": In(stream.Signature(signed(8))),
            "o": Out(stream.Signature(signed(8))),
            # The port signature is the memory's view (addr, data, en are its inputs): Out
            # makes them inputs of this component too.
            "param_wr": Out(memory.WritePort.Signature(addr_width=self.param_addr_bits,
                                                       shape=LnParams())),
            "param_base": In(self.param_addr_bits),
            "busy": Out(1),
        })

    @property
    def dim(self):
        """Row length ``D``."""
        return self._dim

    @property
    def param_depth(self):
        """Words of the parameter memory."""
        return self._param_depth

    @property
    def param_addr_bits(self):
        """Width of a parameter address."""
        return Shape.cast(range(self._param_depth)).width

    @property
    def buffer_depth(self):
        """Entries of the row buffer: two rows."""
        return 2 * self._dim

    @property
    def geometry(self):
        """:func:`ln_geometry` of ``dim``: value ranges, widths and stage-B cycle counts."""
        return self._geometry

    @property
    def stats_cycles(self):
        """Cycles stage B spends on one row before its hand-over cycle."""
        return self._geometry.stats_cycles

    @property
    def emit_latency(self):
        """Cycles from a buffer read issue to the output on ``o`` (never stalled)."""
        return LN_EMIT_LATENCY

    @property
    def multipliers(self):
        """18x18 multipliers inside the unit."""
        return 3 + len(self._geometry.r_chunks) + REQUANT_MULTIPLIERS

    def elaborate(self, platform):
        m = Module()
        dim, g = self._dim, self._geometry
        cap = self.buffer_depth
        abits = self.param_addr_bits
        s1_shape = Shape.cast(range(g.s1_min, g.s1_max + 1))
        s2_shape = Shape.cast(range(g.s2_max + 1))
        c_shape = Shape.cast(range(-g.c_max, g.c_max + 1))
        ns, qb = g.sqrt_steps, g.quotient_bits

        m.submodules.buffer = buffer = memory.Memory(shape=signed(8), depth=cap, init=[])
        buf_wr = buffer.write_port()
        buf_rd = buffer.read_port()
        m.submodules.params = params = memory.Memory(shape=LnParams(), depth=self._param_depth,
                                                     init=[])
        prm_rd = params.read_port()
        wiring.connect(m, wiring.flipped(self.param_wr), params.write_port())

        occupied = Signal(range(cap + 1))      # entries written and not yet read by stage C
        accept = Signal()
        issue = Signal()                       # stage C reads an entry this cycle
        m.d.sync += occupied.eq(occupied + accept - issue)

        # ---- Stage A: input, row buffer write, s1 and s2 -------------------------------------
        wr_ptr = Signal(range(cap))
        col = Signal(range(dim))
        base_cur = Signal(abits)
        a_valid = [Signal(name=f"a_valid{k}") for k in range(2)]
        a_x = [Signal(signed(8), name=f"a_x{k}") for k in range(2)]
        a_first = [Signal(name=f"a_first{k}") for k in range(2)]
        a_last = [Signal(name=f"a_last{k}") for k in range(2)]
        a_base = [Signal(abits, name=f"a_base{k}") for k in range(2)]
        s1 = Signal(s1_shape)
        s2 = Signal(s2_shape)
        ab_full = Signal()                     # token of a finished row, for stage B
        ab_s1 = Signal(s1_shape)
        ab_s2 = Signal(s2_shape)
        ab_base = Signal(abits)

        last_col = col == dim - 1
        # A row's last element is taken only when its token will find the A->B slot free.
        token_pending = ab_full | (a_valid[0] & a_last[0]) | (a_valid[1] & a_last[1])
        m.d.comb += [
            self.i.ready.eq((occupied != cap) & ~(last_col & token_pending)),
            accept.eq(self.i.valid & self.i.ready),
        ]
        base_now = Mux(col == 0, self.param_base, base_cur)
        m.d.comb += [buf_wr.addr.eq(wr_ptr), buf_wr.data.eq(self.i.payload),
                     buf_wr.en.eq(accept)]
        with m.If(accept):
            m.d.sync += [
                wr_ptr.eq(Mux(wr_ptr == cap - 1, 0, wr_ptr + 1)),
                col.eq(Mux(last_col, 0, col + 1)),
                base_cur.eq(base_now),
            ]
        m.d.sync += [
            a_valid[0].eq(accept), a_x[0].eq(self.i.payload), a_first[0].eq(col == 0),
            a_last[0].eq(last_col), a_base[0].eq(base_now),
            a_valid[1].eq(a_valid[0]), a_x[1].eq(a_x[0]), a_first[1].eq(a_first[0]),
            a_last[1].eq(a_last[0]), a_base[1].eq(a_base[0]),
        ]
        m.submodules.mult_square = square = PipelinedMultiplier(signed(8), signed(8))
        m.d.comb += [square.a.eq(self.i.payload), square.b.eq(self.i.payload)]
        s1_next = Mux(a_first[1], 0, s1) + a_x[1]
        s2_next = Mux(a_first[1], 0, s2) + square.p
        ab_take = Signal()
        with m.If(a_valid[1]):
            m.d.sync += [s1.eq(s1_next), s2.eq(s2_next)]
        with m.If(ab_take):
            m.d.sync += ab_full.eq(0)
        with m.If(a_valid[1] & a_last[1]):
            m.d.sync += [ab_full.eq(1), ab_s1.eq(s1_next), ab_s2.eq(s2_next),
                         ab_base.eq(a_base[1])]

        # ---- Stage B: v, sigma = isqrt(v), r = floor(2^30 / sigma) ---------------------------
        b_idle = Signal()
        b_s1 = Signal(s1_shape)
        b_s2 = Signal(s2_shape)
        b_base = Signal(abits)
        v_width = max(g.v_bits, (g.s2_max * dim).bit_length(), 2 * ns) + 2
        v = Signal(signed(v_width))
        step = Signal(range(max(g.stats_products + 2, ns, qb)))
        root = Signal(ns)
        rem = Signal(ns + 2)
        quotient = Signal(qb)
        drem = Signal(ns + 1)
        bc_full = Signal()                     # statistics of a row, for stage C
        bc_s1 = Signal(s1_shape)
        bc_r = Signal(qb)
        bc_base = Signal(abits)
        bc_take = Signal()

        m.submodules.mult_stats = stats = PipelinedMultiplier(signed(DSP_PORT_BITS),
                                                              signed(DSP_PORT_BITS))
        products = [(b_s1, b_s1, True, 0)] + [(b_s2[lo:hi], Const(dim, 9), False, lo)
                                              for lo, hi in g.s2_chunks]
        # Dividend 2^30 = (2^30 >> qb) * 2^qb + low: the divider starts from the high part and
        # shifts in the bits of ``low``, most significant first.
        low = (1 << LN_R) & ((1 << qb) - 1)
        low_steps = [k for k in range(qb) if (low >> (qb - 1 - k)) & 1]

        with m.FSM(name="stats"):
            with m.State("IDLE"):
                m.d.comb += b_idle.eq(1)
                with m.If(ab_full):
                    m.d.comb += ab_take.eq(1)
                    m.d.sync += [b_s1.eq(ab_s1), b_s2.eq(ab_s2), b_base.eq(ab_base),
                                 v.eq(0), step.eq(0)]
                    m.next = "PRODUCTS"
            with m.State("PRODUCTS"):
                # One product issued per cycle; each is accumulated MULTIPLIER_LATENCY later.
                m.d.sync += step.eq(step + 1)
                with m.Switch(step):
                    for k, (a, b, negate, shift) in enumerate(products):
                        with m.Case(k):
                            m.d.comb += [stats.a.eq(a), stats.b.eq(b)]
                with m.Switch(step):
                    for k, (a, b, negate, shift) in enumerate(products):
                        with m.Case(k + 2):
                            term = stats.p << shift
                            m.d.sync += v.eq(v - term if negate else v + term)
                with m.If(step == len(products) + 1):
                    m.d.sync += [step.eq(0), root.eq(0), rem.eq(0)]
                    m.next = "SQRT"
            with m.State("SQRT"):
                # Digit recurrence: two bits of v per step, one bit of the root.
                pair = v[2 * ns - 2:2 * ns]
                rem2 = Cat(pair, rem)                       # (rem << 2) | pair
                trial = Cat(Const(1, 2), root)              # (root << 2) | 1
                fits = rem2 >= trial
                m.d.sync += [
                    rem.eq(Mux(fits, rem2 - trial, rem2)),
                    root.eq(Cat(fits, root)),
                    v.eq(v << 2),
                    step.eq(step + 1),
                ]
                with m.If(step == ns - 1):
                    m.d.sync += [step.eq(0), quotient.eq(0), drem.eq((1 << LN_R) >> qb)]
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                # Restoring division of 2^30 by sigma (= root), one quotient bit per step.
                bit = Const(0, 1)
                for k in low_steps:
                    bit = bit | (step == k)
                shifted = Cat(bit, drem)
                fits = shifted >= root
                m.d.sync += [
                    drem.eq(Mux(fits, shifted - root, shifted)),
                    quotient.eq(Cat(fits, quotient)),
                    step.eq(step + 1),
                ]
                with m.If(step == qb - 1):
                    m.next = "HAND"
            with m.State("HAND"):
                with m.If(~bc_full):
                    m.d.sync += [bc_full.eq(1), bc_s1.eq(b_s1), bc_base.eq(b_base),
                                 bc_r.eq(Mux(root == 0, 0, quotient))]
                    m.next = "IDLE"
        with m.If(bc_take):
            m.d.sync += bc_full.eq(0)

        # ---- Stage C: read-out, c = D*x - s1, u = (c*r + 2^19) >> 20, +-u, requantize ----------
        m.submodules.requant = requant = Requantizer()
        advance = Signal()
        m.d.comb += advance.eq(requant.i.ready)

        c_active = Signal()
        c_col = Signal(range(dim))
        c_s1 = Signal(s1_shape)
        c_r = Signal(qb)
        c_addr = Signal(abits)
        rd_ptr = Signal(range(cap))
        c_last = c_col == dim - 1
        m.d.comb += [
            issue.eq(c_active & advance),
            bc_take.eq(bc_full & (~c_active | (c_last & advance))),
        ]
        with m.If(issue):
            m.d.sync += [
                rd_ptr.eq(Mux(rd_ptr == cap - 1, 0, rd_ptr + 1)),
                c_col.eq(Mux(c_last, 0, c_col + 1)),
                c_addr.eq(c_addr + 1),
            ]
            with m.If(c_last):
                m.d.sync += c_active.eq(0)
        with m.If(bc_take):
            m.d.sync += [c_active.eq(1), c_col.eq(0), c_s1.eq(bc_s1), c_r.eq(bc_r),
                         c_addr.eq(bc_base)]

        # Registers of stage k (k = 1 .. FRONT_STAGES) hold the element read k advances ago.
        n = FRONT_STAGES
        valid = [None] + [Signal(name=f"c_valid{k}") for k in range(1, n + 1)]
        s1_pipe = [c_s1] + [Signal(s1_shape, name=f"c_s1_{k}") for k in range(1, 5)]
        r_pipe = [c_r] + [Signal(qb, name=f"c_r_{k}") for k in range(1, 6)]
        addr_pipe = [c_addr] + [Signal(abits, name=f"c_addr_{k}") for k in range(1, 9)]
        with m.If(advance):
            m.d.sync += valid[1].eq(c_active)
            m.d.sync += [valid[k].eq(valid[k - 1]) for k in range(2, n + 1)]
            for pipe in (s1_pipe, r_pipe, addr_pipe):
                m.d.sync += [pipe[k].eq(pipe[k - 1]) for k in range(1, len(pipe))]

        # Stage 1: buffer read data. Stage 2: x registered (block RAM clock-to-output).
        m.d.comb += [buf_rd.addr.eq(rd_ptr), buf_rd.en.eq(advance)]
        x = Signal(signed(8))
        with m.If(advance):
            m.d.sync += x.eq(buf_rd.data)
        # Stages 3-4: D*x. Stage 5: c = D*x - s1.
        m.submodules.mult_dx = mult_dx = PipelinedMultiplier(signed(8), unsigned(9))
        m.d.comb += [mult_dx.a.eq(x), mult_dx.b.eq(dim), mult_dx.en.eq(advance)]
        c = Signal(c_shape)
        with m.If(advance):
            m.d.sync += c.eq(mult_dx.p - s1_pipe[4])
        # Stages 6-7: c * r in 17-bit chunks of r. Stage 8: fabric registers of the partials.
        partials = []
        for k, (lo, hi) in enumerate(g.r_chunks):
            m.submodules[f"mult_cr{k}"] = mult = PipelinedMultiplier(c_shape, unsigned(hi - lo))
            m.d.comb += [mult.a.eq(c), mult.b.eq(r_pipe[5][lo:hi]), mult.en.eq(advance)]
            partial = Signal(mult.p.shape(), name=f"c_partial{k}")
            with m.If(advance):
                m.d.sync += partial.eq(mult.p)
            partials.append((partial, lo))
        # Stage 9: the product. Stage 10: u. The parameter read is issued at stage 8, its word
        # arrives at stage 9 and is registered at stage 10 before any logic uses it (a block
        # RAM's output is 5.8 ns after the clock on ECP5).
        product = Signal(signed(c_shape.width + qb + 1))
        u = Signal(signed(product.shape().width - LN_SHIFT + 1))
        with m.If(advance):
            m.d.sync += [
                product.eq(sum(partial << lo for partial, lo in partials)),
                u.eq((product + (1 << (LN_SHIFT - 1))) >> LN_SHIFT),
            ]
        m.d.comb += [prm_rd.addr.eq(addr_pipe[8]), prm_rd.en.eq(advance)]
        prm_word = Signal(LnParams())
        # Stage 11: +-u and the parameters registered, into the requantizer.
        acc = Signal(signed(32))
        prm = Signal(LnParams())
        with m.If(advance):
            m.d.sync += [prm_word.eq(prm_rd.data),
                         acc.eq(Mux(prm_word.neg, -u, u)), prm.eq(prm_word)]
        m.d.comb += [
            requant.i.valid.eq(valid[n]),
            requant.i.payload.acc.eq(acc),
            requant.i.payload.params.bias.eq(prm.bias),
            requant.i.payload.params.mult.eq(prm.mult),
            requant.i.payload.params.shift.eq(prm.shift),
            self.o.valid.eq(requant.o.valid),
            self.o.payload.eq(requant.o.payload.value),
            requant.o.ready.eq(self.o.ready),
        ]

        m.d.comb += self.busy.eq(
            (occupied != 0) | a_valid[0] | a_valid[1] | ab_full | ~b_idle | bc_full |
            c_active | Cat(valid[1:]).any() | requant.busy)
        return m
