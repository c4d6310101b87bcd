"""Integer softmax unit: one row of INT8 scores in, one row of UINT7 probabilities out.

Implements the integer softmax of ``docs/sparse_attention.md`` section 5 (the definition, and its
golden model, live in ``verif/golden_softmax.py``)::

    t_j = max(s) - s_j;  e_j = EXP2_LUT[t_j & 15] >> (t_j >> 4);  r = floor(2^31 / sum_j e_j)
    p_j = min((e_j * r + 2^23) >> 24, 127)

A row passes through four phases, one after the other (rows do not overlap):

1. receive: the scores are written into a block RAM and the maximum is tracked (1 per cycle);
2. sum: the row is read back, ``e_j`` computed (16-entry table and a shift) and accumulated;
3. divide: ``r = floor(2^31 / sum)`` by a restoring divider, one quotient bit per cycle;
4. emit: the row is read again, ``e_j`` recomputed and ``p_j = e_j * r`` rounded on one
   18x18 multiplier, then streamed out in input order (stalls under back-pressure).
"""

import operator

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError
from ..numeric import EXP2_LUT
from .multiplier import MULTIPLIER_LATENCY, PipelinedMultiplier

__all__ = ["IntSoftmax", "EXP2_LUT", "MAX_LENGTH_LIMIT", "QUOTIENT_BITS", "EXP_STAGES",
           "EMIT_LATENCY", "SOFTMAX_MULTIPLIERS", "check_max_length", "score_layout",
           "prob_layout"]

#: Largest supported row buffer; keeps ``sum <= 2^31`` so that ``r >= 1``.
MAX_LENGTH_LIMIT = 2 ** 16

#: floor(2^31 / sum) < 2^17 because sum >= 2^15: the divider only produces quotient bits 16..0,
#: one per cycle.
QUOTIENT_BITS = 17
#: Registers from issuing a buffer read to e_j: read data, score register, t register, e register.
EXP_STAGES = 4
#: e_j -> multiplier (MULTIPLIER_LATENCY registers) -> rounded, clamped output register.
EMIT_LATENCY = EXP_STAGES + MULTIPLIER_LATENCY + 1
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
        Longest row (``1 .. 65536``); the size of the row buffer.

    Members
    -------
    i : ``In(stream.Signature(score_layout()))``
        Scores of one row, ``last`` set on the final one. Accepted only in the receive phase:
        the next row is taken after the current row's last probability has been emitted.
    o : ``Out(stream.Signature(prob_layout()))``
        Probabilities of the row in input order, ``last`` on the final one.
    error : ``Out(1)``
        Sticky (until reset): a row had more than ``max_length`` scores. Such a row is still
        consumed up to its ``last``, so the unit never hangs; scores past ``max_length`` are
        dropped and the unit emits the softmax of the first ``max_length`` scores
        (``max_length`` outputs, ``last`` on the final one).

    With the input always valid and the output always ready, a row of ``n`` scores occupies
    the unit for ``row_cycles(n) = 3 n + 28`` cycles (first score accepted to first score of the
    next row accepted; the model is :func:`gen.cycles.softmax_row_cycles`); ``o`` stalls and
    input gaps add cycle for cycle.
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
        """Cycles a row of ``n`` scores occupies the unit (input always valid, output always
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

        m.submodules.buffer = buffer = memory.Memory(shape=signed(8), depth=n_max, init=[])
        wr = buffer.write_port()
        rd = buffer.read_port()

        count = Signal(range(n_max + 1))        # scores stored for this row
        maximum = Signal(signed(8))
        rd_ptr = Signal(range(n_max + 1))
        total = Signal(unsigned(self.sum_bits))
        recip = Signal(unsigned(QUOTIENT_BITS))  # r = floor(2^31 / total)
        remainder = Signal(unsigned(self.sum_bits + 1))
        step = Signal(range(QUOTIENT_BITS))
        error = Signal()
        m.d.comb += self.error.eq(error)

        # The whole read pipeline (and the output register) moves together, and stops only
        # while a probability waits on a full output: valid never waits for ready.
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        pass_active = Signal()          # sum or emit phase: read the buffer
        emitting = Signal()             # emit phase: the pipeline feeds the multiplier
        issue = Signal()
        m.d.comb += issue.eq(pass_active & (rd_ptr != count))

        # Stage 1: buffer read data. Stage 2: score register (block RAM clock-to-output leaves
        # no time for logic). Stage 3: t = max - s. Stage 4: e = LUT[t & 15] >> (t >> 4).
        # valid[k] / last[k] belong to stage k + 1; the output register (stage 7) holds its own
        # last flag in the payload.
        valid = [Signal(name=f"valid_{k}") for k in range(1, EMIT_LATENCY + 1)]
        last = [Signal(name=f"last_{k}") for k in range(1, EMIT_LATENCY)]
        score = Signal(signed(8))
        dist = Signal(unsigned(8))
        lut_value = Signal(unsigned(16))
        exp = Signal(unsigned(16))
        m.d.comb += [rd.addr.eq(rd_ptr), rd.en.eq(advance)]
        with m.Switch(dist[0:4]):
            for f, value in enumerate(EXP2_LUT):
                with m.Case(f):
                    m.d.comb += lut_value.eq(value)
        with m.If(advance):
            m.d.sync += [
                valid[0].eq(issue), last[0].eq(rd_ptr + 1 == count),
                score.eq(rd.data),
                dist.eq((maximum - score)[0:8]),
                exp.eq(lut_value >> dist[4:8]),
            ]
            for k in range(1, EMIT_LATENCY):
                # Only the emit phase carries e_j on into the multiplier.
                enter = valid[k - 1] & emitting if k == EXP_STAGES else valid[k - 1]
                m.d.sync += valid[k].eq(enter)
                if k < len(last):
                    m.d.sync += last[k].eq(last[k - 1])
            with m.If(issue):
                m.d.sync += rd_ptr.eq(rd_ptr + 1)

        # Stages 5-6: p = e * r on one 16 x 17 bit multiplier (fits an 18x18 port pair).
        m.submodules.mult = mult = PipelinedMultiplier(unsigned(16), unsigned(QUOTIENT_BITS))
        m.d.comb += [mult.a.eq(exp), mult.b.eq(recip), mult.en.eq(advance)]
        # Stage 7: (p + 2^23) >> 24 is at most 128 (p <= 2^31); clamp to 127.
        rounded = Signal(unsigned(9))
        m.d.comb += rounded.eq(mult.p[24:32] + mult.p[23])
        with m.If(advance):
            m.d.sync += [
                self.o.payload.value.eq(Mux(rounded[7:9].any(), 127, rounded[0:7])),
                self.o.payload.last.eq(last[-1]),
            ]
        m.d.comb += self.o.valid.eq(valid[-1])

        with m.FSM():
            with m.State("RECEIVE"):
                m.d.comb += self.i.ready.eq(1)
                fits = count != n_max
                m.d.comb += [
                    wr.addr.eq(count),
                    wr.data.eq(self.i.payload.value),
                    wr.en.eq(self.i.valid & fits),
                ]
                with m.If(self.i.valid):
                    with m.If(fits):
                        m.d.sync += count.eq(count + 1)
                        with m.If((count == 0) | (self.i.payload.value > maximum)):
                            m.d.sync += maximum.eq(self.i.payload.value)
                    with m.Else():
                        m.d.sync += error.eq(1)
                    with m.If(self.i.payload.last):
                        m.d.sync += [rd_ptr.eq(0), total.eq(0)]
                        m.next = "SUM"
            with m.State("SUM"):
                m.d.comb += pass_active.eq(1)
                # Nothing stalls here: the output is empty between rows.
                e_valid = valid[EXP_STAGES - 1]
                with m.If(e_valid):
                    m.d.sync += total.eq(total + exp)
                    with m.If(last[EXP_STAGES - 1]):
                        # The division starts from remainder 2^31 >> 17 = 2^14 < sum.
                        m.d.sync += [remainder.eq(1 << (31 - QUOTIENT_BITS)), step.eq(0)]
                        m.next = "DIVIDE"
            with m.State("DIVIDE"):
                # Restoring division of 2^31 (whose low 17 bits are zero) by the sum.
                shifted = remainder << 1
                bit = shifted >= total
                m.d.sync += [
                    remainder.eq(Mux(bit, shifted - total, shifted)),
                    recip.eq(Cat(bit, recip[:-1])),
                    step.eq(step + 1),
                ]
                with m.If(step == QUOTIENT_BITS - 1):
                    m.d.sync += rd_ptr.eq(0)
                    m.next = "EMIT"
            with m.State("EMIT"):
                m.d.comb += [pass_active.eq(1), emitting.eq(1)]
                with m.If(self.o.valid & self.o.ready & self.o.payload.last):
                    m.d.sync += count.eq(0)
                    m.next = "RECEIVE"
        return m
