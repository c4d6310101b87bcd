"""Integer softmax unit: rows of INT8 scores in, rows of UINT7 probabilities out.

Implements the integer softmax of ``docs/sparse_attention.md`` section 5 (the definition, and its
golden model, live in ``verif/golden_softmax.py``)::

    t_j = max(s) - s_j;  e_j = EXP2_LUT[t_j & 15] >> (t_j >> 4);  r = floor(2^31 / sum_j e_j)
    p_j = min((e_j * r + 2^23) >> 24, 127)

A row passes through four stages, and consecutive rows overlap: each stage works on its own row
and hands it to the next stage (through registers) when that one is free, so up to four rows
are in the unit at once, each in its own row buffer (``ROW_BUFFERS``, used as a ring):

A. receive: the scores are written into the row's buffer and the maximum is tracked (1 per
   cycle);
B. sum: the row is read back, ``e_j`` computed (16-entry table and a shift) and accumulated;
D. divide: ``r = floor(2^31 / sum)`` by a restoring divider, one quotient bit per cycle (no
   buffer access: the row waits in its buffer);
C. emit: the row is read again, ``e_j`` recomputed (a second table) and ``p_j = e_j * r``
   rounded on one 18x18 multiplier, then streamed out in input order (stalls under
   back-pressure).

A row keeps its buffer until stage C has emitted it. Each stage holds one row until the next
stage takes it, so when stage A starts row k, row k - 4 has left stage C: four buffers are
never short, and each stage finds row k in buffer k % 4 by stepping its own base. Stage C
(``n + EMIT_LATENCY + 1`` cycles a row) sets the pace for rows of 11 scores or more, the
divider (``QUOTIENT_BITS + 2``) below that: :func:`gen.cycles.softmax_row_cycles`.
"""

import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError
from ..numeric import EXP2_LUT
from .multiplier import MULTIPLIER_LATENCY, PipelinedMultiplier

__all__ = ["IntSoftmax", "EXP2_LUT", "MAX_LENGTH_LIMIT", "QUOTIENT_BITS", "EXP_STAGES",
           "EMIT_LATENCY", "HANDOFF_CYCLES", "ROW_BUFFERS", "SOFTMAX_MULTIPLIERS",
           "check_max_length", "score_layout", "prob_layout"]

#: Largest supported row buffer; keeps ``sum <= 2^31`` so that ``r >= 1``.
MAX_LENGTH_LIMIT = 2 ** 16

#: floor(2^31 / sum) < 2^17 because sum >= 2^15: the divider only produces quotient bits 16..0,
#: one per cycle.
QUOTIENT_BITS = 17
#: Registers from issuing a buffer read to e_j: read data, score register, t register, e register.
EXP_STAGES = 4
#: e_j -> multiplier (MULTIPLIER_LATENCY registers) -> rounded, clamped output register.
EMIT_LATENCY = EXP_STAGES + MULTIPLIER_LATENCY + 1
#: Row buffers (a ring): one for each of the stages receive, sum, divide and emit.
ROW_BUFFERS = 4
#: A stage's finished row waits one cycle in its "done" register before the next stage takes
#: it (the receive stage's ``a_full``, the sum's ``b_done``, the divider's ``d_done``).
HANDOFF_CYCLES = 1
#: Multipliers inside IntSoftmax (the ``e_j * r`` product, one PipelinedMultiplier).
SOFTMAX_MULTIPLIERS = 1


def score_layout():
    """Input payload: an INT8 ``value`` and ``last`` on the row's final score."""
    return data.StructLayout({"value": signed(8), "last": 1})


def prob_layout():
    """Output payload: a UINT7 ``value`` (p * 128) and ``last`` on the row's final probability."""
    return data.StructLayout({"value": unsigned(7), "last": 1})


def check_max_length(max_length):
    """``max_length`` as an int in ``1 .. MAX_LENGTH_LIMIT``, else ``UserError``."""
    if isinstance(max_length, bool):
        raise UserError(f"softmax max_length must be an integer, not {max_length!r}")
    try:
        max_length = operator.index(max_length)
    except TypeError:
        raise UserError(f"softmax max_length must be an integer, not {max_length!r}") from None
    if not 1 <= max_length <= MAX_LENGTH_LIMIT:
        raise UserError(f"softmax max_length is {max_length}; choose a row length between 1 "
                        f"and {MAX_LENGTH_LIMIT} (the longest attention row to support)")
    return max_length


class IntSoftmax(wiring.Component):
    """Row-wise integer softmax over a stream of INT8 scores.

    Parameters
    ----------
    max_length : int
        Longest row (``1 .. 65536``); the size of each of the ``ROW_BUFFERS`` row buffers.

    Members
    -------
    i : ``In(stream.Signature(score_layout()))``
        Scores of the rows, ``last`` set on each row's final one. Not ready from the cycle
        after a row's ``last`` until the sum stage takes that row (at least one cycle).
    o : ``Out(stream.Signature(prob_layout()))``
        Probabilities of each row in input order, rows in input order, ``last`` on each row's
        final one.
    error : ``Out(1)``
        Sticky (until reset): a row had more than ``max_length`` scores. Such a row is still
        consumed up to its ``last``, so the unit never hangs; scores past ``max_length`` are
        dropped and the unit emits the softmax of the first ``max_length`` scores
        (``max_length`` outputs, ``last`` on the final one).

    With the input always valid and the output always ready, rows of ``n`` scores follow each
    other every ``row_cycles(n) = max(n + 8, 19)`` cycles (:func:`gen.cycles.softmax_row_cycles`;
    25 for ``n = 17``), and ``rows`` of them take
    :func:`gen.cycles.softmax_rows_cycles` ``= 3 n + 31 + (rows - 1) row_cycles(n)`` cycles from
    the first score accepted to the cycle after the last probability. Input gaps and stalls
    on ``o`` hold up the stage they reach, and the others once rows wait on it.
    """

    def __init__(self, max_length):
        try:
            self._max_length = check_max_length(max_length)
        except UserError:
            self._MustUse__silence = True    # a refused component is not a forgotten one
            raise
        super().__init__({
            "i": In(stream.Signature(score_layout())),
            "o": Out(stream.Signature(prob_layout())),
            "error": Out(1),
        })

    @property
    def max_length(self):
        """Longest row the buffer holds."""
        return self._max_length

    @property
    def sum_bits(self):
        """Width of the ``sum`` accumulator (``max_length * 2^15`` fits)."""
        return (self._max_length * EXP2_LUT[0]).bit_length()

    @property
    def divider_cycles(self):
        """Cycles of the restoring divider (one quotient bit each)."""
        return QUOTIENT_BITS

    @property
    def emit_latency(self):
        """Cycles from issuing a buffer read to the probability on ``o`` (without stalls)."""
        return EMIT_LATENCY

    def row_cycles(self, n):
        """Cycles between consecutive rows of ``n`` scores (input always valid, output always
        ready): :func:`gen.cycles.softmax_row_cycles` for ``n`` in ``1 .. max_length``."""
        # gen.cycles imports this module's constants, so it is imported here, not at the top.
        from ..cycles import softmax_row_cycles
        n = operator.index(n)
        if not 1 <= n <= self._max_length:
            raise ValueError(f"row length {n} outside 1 .. {self._max_length}")
        return softmax_row_cycles(n)

    def elaborate(self, platform):
        m = Module()
        n_max = self._max_length
        depth = ROW_BUFFERS * n_max

        # Row k lives in buffer k % ROW_BUFFERS (entries from base (k % ROW_BUFFERS) * n_max);
        # every stage meets the rows in order, so each one steps its own base.
        m.submodules.buffer = buffer = memory.Memory(shape=signed(8), depth=depth, init=[])
        # Stages B and C read different rows in the same cycle: two read ports (synchronous,
        # their data registered once more before any logic, as every block RAM output here).
        wr = buffer.write_port()
        rd_sum = buffer.read_port()
        rd_emit = buffer.read_port()

        def next_base(base):
            return Mux(base == depth - n_max, 0, base + n_max)

        error = Signal()
        m.d.comb += self.error.eq(error)

        # -- Stage A: receive a row into its buffer and track its maximum. -------------------
        a_full = Signal()                        # the row is complete, waiting for stage B
        a_count = Signal(range(n_max + 1))       # scores stored for this row
        a_max = Signal(signed(8))
        a_base = Signal(range(depth))
        a_ptr = Signal(range(depth))             # a_base + a_count
        m.d.comb += self.i.ready.eq(~a_full)
        fits = a_count != n_max
        m.d.comb += [wr.addr.eq(a_ptr), wr.data.eq(self.i.payload.value),
                     wr.en.eq(self.i.valid & ~a_full & fits)]
        with m.If(self.i.valid & ~a_full):
            with m.If(fits):
                m.d.sync += [a_count.eq(a_count + 1), a_ptr.eq(a_ptr + 1)]
                with m.If((a_count == 0) | (self.i.payload.value > a_max)):
                    m.d.sync += a_max.eq(self.i.payload.value)
            with m.Else():
                m.d.sync += error.eq(1)
            with m.If(self.i.payload.last):
                m.d.sync += a_full.eq(1)

        # -- Stage B: read the row back, accumulate sum_j e_j. -------------------------------
        b_busy = Signal()
        b_done = Signal()                        # the sum is complete, waiting for stage D
        b_base = Signal(range(depth))
        b_ptr = Signal(range(depth))
        b_left = Signal(range(n_max + 1))        # reads still to issue
        b_len = Signal(range(n_max + 1))
        b_max = Signal(signed(8))
        total = Signal(unsigned(self.sum_bits))
        b_issue = Signal()
        m.d.comb += b_issue.eq(b_busy & (b_left != 0))
        # Nothing stalls stage B: its read pipeline always advances.
        b_valid, b_last, b_exp = _exp_pipeline(m, rd_sum, b_ptr, b_issue, b_left == 1, b_max,
                                              Const(1), "sum")
        with m.If(b_issue):
            m.d.sync += [b_ptr.eq(b_ptr + 1), b_left.eq(b_left - 1)]
        with m.If(b_valid):
            m.d.sync += total.eq(total + b_exp)
            with m.If(b_last):
                m.d.sync += b_done.eq(1)
        a_to_b = a_full & ~b_busy
        with m.If(a_to_b):
            m.d.sync += [
                a_full.eq(0), a_count.eq(0), a_base.eq(next_base(a_base)),
                a_ptr.eq(next_base(a_base)),
                b_busy.eq(1), b_ptr.eq(b_base), b_base.eq(next_base(b_base)),
                b_left.eq(a_count), b_len.eq(a_count), b_max.eq(a_max), total.eq(0),
            ]

        # -- Stage D: r = floor(2^31 / sum), one quotient bit per cycle. ---------------------
        d_busy = Signal()
        d_done = Signal()                        # r is complete, waiting for stage C
        d_len = Signal(range(n_max + 1))
        d_max = Signal(signed(8))
        divisor = Signal(unsigned(self.sum_bits))
        remainder = Signal(unsigned(self.sum_bits + 1))
        quotient = Signal(unsigned(QUOTIENT_BITS))
        step = Signal(range(QUOTIENT_BITS))
        with m.If(d_busy & ~d_done):
            # Restoring division of 2^31 (whose low 17 bits are zero) by the sum.
            shifted = remainder << 1
            bit = shifted >= divisor
            m.d.sync += [
                remainder.eq(Mux(bit, shifted - divisor, shifted)),
                quotient.eq(Cat(bit, quotient[:-1])),
                step.eq(step + 1),
            ]
            with m.If(step == QUOTIENT_BITS - 1):
                m.d.sync += d_done.eq(1)
        b_to_d = b_done & ~d_busy
        with m.If(b_to_d):
            # The division starts from remainder 2^31 >> 17 = 2^14 < sum.
            m.d.sync += [
                b_busy.eq(0), b_done.eq(0),
                d_busy.eq(1), divisor.eq(total), d_len.eq(b_len), d_max.eq(b_max),
                remainder.eq(1 << (31 - QUOTIENT_BITS)), step.eq(0),
            ]

        # -- Stage C: read the row again, p_j = e_j * r, emit in order. ----------------------
        c_busy = Signal()
        c_base = Signal(range(depth))
        c_ptr = Signal(range(depth))
        c_left = Signal(range(n_max + 1))
        c_max = Signal(signed(8))
        recip = Signal(unsigned(QUOTIENT_BITS))  # r of the row being emitted
        # The whole read pipeline (and the output register) moves together, and stops only
        # while a probability waits on a full output: valid never waits for ready.
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        c_issue = Signal()
        m.d.comb += c_issue.eq(c_busy & (c_left != 0))
        e_valid, e_last, c_exp = _exp_pipeline(m, rd_emit, c_ptr, c_issue, c_left == 1, c_max,
                                               advance, "emit")
        with m.If(advance & c_issue):
            m.d.sync += [c_ptr.eq(c_ptr + 1), c_left.eq(c_left - 1)]
        # The multiplier's two registers, then the output register.
        valid = [Signal(name=f"mult_valid_{k}") for k in range(MULTIPLIER_LATENCY)]
        last = [Signal(name=f"mult_last_{k}") for k in range(MULTIPLIER_LATENCY)]
        with m.If(advance):
            m.d.sync += [valid[0].eq(e_valid), last[0].eq(e_last)]
            for k in range(1, MULTIPLIER_LATENCY):
                m.d.sync += [valid[k].eq(valid[k - 1]), last[k].eq(last[k - 1])]
        # p = e * r on one 16 x 17 bit multiplier (fits an 18x18 port pair).
        m.submodules.mult = mult = PipelinedMultiplier(unsigned(16), unsigned(QUOTIENT_BITS))
        m.d.comb += [mult.a.eq(c_exp), mult.b.eq(recip), mult.en.eq(advance)]
        # (p + 2^23) >> 24 is at most 128 (p <= 2^31); clamp to 127.
        rounded = Signal(unsigned(9))
        m.d.comb += rounded.eq(mult.p[24:32] + mult.p[23])
        out_valid = Signal()
        with m.If(advance):
            m.d.sync += [
                out_valid.eq(valid[-1]),
                self.o.payload.value.eq(Mux(rounded[7:9].any(), 127, rounded[0:7])),
                self.o.payload.last.eq(last[-1]),
            ]
        m.d.comb += self.o.valid.eq(out_valid)
        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.sync += c_busy.eq(0)
        d_to_c = d_done & ~c_busy
        with m.If(d_to_c):
            m.d.sync += [
                d_busy.eq(0), d_done.eq(0),
                c_busy.eq(1), c_ptr.eq(c_base), c_base.eq(next_base(c_base)),
                c_left.eq(d_len), c_max.eq(d_max), recip.eq(quotient),
            ]
        return m


def _exp_pipeline(m, rd, addr, issue, last_issue, maximum, advance, name):
    """``e_j`` of the buffer reads issued at ``addr`` (while ``issue``), ``EXP_STAGES``
    registers later: returns (valid, last, e) of the last stage. All stages move on
    ``advance``.

    Stage 1: buffer read data. Stage 2: score register (block RAM clock-to-output leaves no
    time for logic). Stage 3: t = max - s. Stage 4: e = LUT[t & 15] >> (t >> 4).
    """
    valid = [Signal(name=f"{name}_valid_{k}") for k in range(1, EXP_STAGES + 1)]
    last = [Signal(name=f"{name}_last_{k}") for k in range(1, EXP_STAGES + 1)]
    score = Signal(signed(8), name=f"{name}_score")
    dist = Signal(unsigned(8), name=f"{name}_dist")
    lut_value = Signal(unsigned(16), name=f"{name}_lut")
    exp = Signal(unsigned(16), name=f"{name}_exp")
    m.d.comb += [rd.addr.eq(addr), rd.en.eq(advance)]
    with m.Switch(dist[0:4]):
        for f, value in enumerate(EXP2_LUT):
            with m.Case(f):
                m.d.comb += lut_value.eq(value)
    with m.If(advance):
        m.d.sync += [
            valid[0].eq(issue), last[0].eq(last_issue),
            score.eq(rd.data),
            dist.eq((maximum - score)[0:8]),
            exp.eq(lut_value >> dist[4:8]),
        ]
        for k in range(1, EXP_STAGES):
            m.d.sync += [valid[k].eq(valid[k - 1]), last[k].eq(last[k - 1])]
    return valid[-1], last[-1], exp
