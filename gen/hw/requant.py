"""Requantization of INT32 accumulators to INT8, per the numeric contract.

``y = clamp((acc + bias) * M + 2^(S-1)) >> S, -128, 127)`` with ``0 <= M < 2^31``,
``1 <= S <= 62`` and an arithmetic shift. The 32 x 31 bit product is split into four partial
products that each fit one 18x18 multiplier (ECP5 MULT18X18D), so that every multiply sits
between registers and the unit runs at the array's clock.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .multiplier import MULTIPLIER_LATENCY, PipelinedMultiplier

__all__ = ["RequantParams", "Requantizer", "REQUANT_LATENCY", "REQUANT_MULTIPLIERS"]

#: Pipeline registers between an accepted input and its output (when never stalled).
REQUANT_LATENCY = 11
#: 18x18 multipliers one requantizer uses.
REQUANT_MULTIPLIERS = 4


class RequantParams(data.StructLayout):
    """Per-output-channel parameters: INT32 bias, multiplier ``M`` and shift ``S``."""
    def __init__(self):
        super().__init__({
            "bias":  signed(32),
            "mult":  unsigned(31),
            "shift": unsigned(6),
        })


class Requantizer(wiring.Component):
    """Pipelined INT32 -> INT8 requantizer with back-pressure.

    Parameters
    ----------
    tag_shape : shape-like
        Shape of a tag carried unchanged from input to output (an output address, say).

    Members
    -------
    i : ``In(stream.Signature(...))``
        Accumulator (``acc``), its channel's ``params`` and a ``tag``.
    o : ``Out(stream.Signature(...))``
        The INT8 ``value`` and the input's ``tag``.
    busy : ``Out(1)``
        High while any input is inside the pipeline.

    The pipeline stalls as a whole while its output is held (``o.valid & ~o.ready``).
    """

    def __init__(self, tag_shape=unsigned(1)):
        self._tag_shape = Shape.cast(tag_shape)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "acc":    signed(32),
                "params": RequantParams(),
                "tag":    self._tag_shape,
            }))),
            "o": Out(stream.Signature(data.StructLayout({
                "value": signed(8),
                "tag":   self._tag_shape,
            }))),
            "busy": Out(1),
        })

    @property
    def tag_shape(self):
        return self._tag_shape

    def elaborate(self, platform):
        m = Module()

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
        ]

        # One valid bit, tag and shift per stage; the last stage is the output register.
        stages = REQUANT_LATENCY
        valid = [Signal(name=f"valid_{n}") for n in range(stages)]
        tags = [Signal(self._tag_shape, name=f"tag_{n}") for n in range(stages)]
        shifts = [Signal(6, name=f"shift_{n}") for n in range(stages)]
        with m.If(advance):
            m.d.sync += [valid[0].eq(self.i.valid), tags[0].eq(self.i.payload.tag),
                         shifts[0].eq(self.i.payload.params.shift)]
            for n in range(1, stages):
                m.d.sync += [valid[n].eq(valid[n - 1]), tags[n].eq(tags[n - 1]),
                             shifts[n].eq(shifts[n - 1])]

        # Stage 0: register the inputs as they are; the parameters come straight from a block
        # RAM, whose clock-to-output delay leaves no time for logic in the same cycle.
        acc_in = Signal(signed(32), reset_less=True)
        bias_in = Signal(signed(32), reset_less=True)
        mult_in = Signal(unsigned(31), reset_less=True)
        with m.If(advance):
            m.d.sync += [
                acc_in.eq(self.i.payload.acc),
                bias_in.eq(self.i.payload.params.bias),
                mult_in.eq(self.i.payload.params.mult),
            ]

        # Stage 1: x = acc + bias (the contract guarantees it fits INT32).
        x = Signal(signed(32), reset_less=True)
        mult = Signal(unsigned(31), reset_less=True)
        with m.If(advance):
            m.d.sync += [x.eq(acc_in + bias_in), mult.eq(mult_in)]

        # Stages 2-3 (inside the multipliers) and 4: four partial products of at most 17 x 17
        # bits signed, each on one 18x18 multiplier, then a fabric register.
        x_lo, x_hi = x[0:16], x[16:32].as_signed()
        m_lo, m_hi = mult[0:16], mult[16:31]
        partials = {}
        for name, a, b, shape in (("ll", x_lo, m_lo, unsigned(32)), ("lh", x_lo, m_hi, unsigned(31)),
                                  ("hl", x_hi, m_lo, signed(32)), ("hh", x_hi, m_hi, signed(31))):
            m.submodules[f"mult_{name}"] = multiplier = PipelinedMultiplier(a.shape(), b.shape())
            partial = Signal(shape, name=f"p_{name}", reset_less=True)
            m.d.comb += [multiplier.a.eq(a), multiplier.b.eq(b), multiplier.en.eq(advance)]
            with m.If(advance):
                m.d.sync += partial.eq(multiplier.p)
            partials[name] = partial
        stage = 2 + MULTIPLIER_LATENCY      # the stage of the partial-product registers

        # The outer products do not overlap, so they combine by concatenation.
        outer = Signal(signed(64), reset_less=True)
        middle = Signal(signed(33), reset_less=True)
        with m.If(advance):
            m.d.sync += [
                outer.eq(Cat(partials["ll"], partials["hh"]).as_signed()),
                middle.eq(partials["lh"] + partials["hl"]),
            ]
        stage += 1

        # The full product, and the rounding constant 2^(S-1).
        product = Signal(signed(64), reset_less=True)
        rounding = Signal(unsigned(62), reset_less=True)
        with m.If(advance):
            m.d.sync += [
                product.eq(outer + (middle << 16)),
                rounding.eq(Const(1, 63) << shifts[stage] >> 1),
            ]
        stage += 1

        # Add the rounding term.
        rounded = Signal(signed(64), reset_less=True)
        with m.If(advance):
            m.d.sync += rounded.eq(product + rounding)
        stage += 1

        # Arithmetic shift right by S, split into byte and bit steps.
        coarse = Signal(signed(64), reset_less=True)
        fine = Signal(signed(64), reset_less=True)
        # The result fits INT8 iff bits 7..63 of `fine` are all equal, that is bits 7+s..63 of
        # `coarse` (s = S mod 8 < 8): those from 15 up, all zero or all one, are reduced here,
        # beside the bit step, so that the saturation below looks at 10 bits, not 57 (its
        # five LUT levels were the routed critical path of the 12x12 array, 126.2 MHz).
        high_zero = Signal()
        high_ones = Signal()
        with m.If(advance):
            m.d.sync += [
                coarse.eq(rounded >> (shifts[stage] & 0b111000)),
                fine.eq(coarse >> shifts[stage + 1][0:3]),
                high_zero.eq(coarse[15:64] == 0),
                high_ones.eq(coarse[15:64].all()),
            ]
        stage += 2

        # Saturate to INT8 (the output register).
        assert stage + 2 == stages, "REQUANT_LATENCY disagrees with the pipeline"
        with m.If(advance):
            # Bits 15-s..14 of `fine` are bits 15.. of `coarse`; its bits 7..14 complete 7+s..63.
            fits = (high_zero & (fine[7:15] == 0)) | (high_ones & fine[7:15].all())
            m.d.sync += self.o.payload.value.eq(
                Mux(fits, fine[0:8].as_signed(), Mux(fine[63], -128, 127)))
        m.d.comb += [
            self.o.valid.eq(valid[stages - 1]),
            self.o.payload.tag.eq(tags[stages - 1]),
            self.busy.eq(Cat(valid).any()),
        ]
        return m
