"""Residual add with scale alignment (docs/vit.md section 1.2), per lane::

    y = clamp((a * ma + b * mb + 2^(S-1)) >> S, -128, 127)

with ``a``, ``b`` INT8, ``0 <= ma, mb < 2^15``, ``1 <= S <= 31`` and an arithmetic shift.
Each product (8 x 15 bits) takes one 18x18 multiplier (`PipelinedMultiplier`, an ECP5
MULT18X18D with its input and output registers); the sum, rounding, shift and saturation
are pipelined so that no stage has more than one carry chain or a short mux tree.
"""

import operator

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...errors import UserError
from ..multiplier import MULTIPLIER_LATENCY, PipelinedMultiplier

__all__ = ["ResidualParams", "ResidualAdder", "RESIDUAL_LATENCY", "RESIDUAL_MULTIPLIERS_PER_LANE",
           "MAX_LANES"]

#: Pipeline registers between an accepted input and its output (when never stalled).
RESIDUAL_LATENCY = 9
#: 18x18 multipliers per lane (``a * ma`` and ``b * mb``).
RESIDUAL_MULTIPLIERS_PER_LANE = 2
#: Most lanes one adder may have.
MAX_LANES = 256


class ResidualParams(data.StructLayout):
    """The residual add's parameters: multipliers ``ma``, ``mb`` (``0 .. 2^15-1``) and the
    shift ``S`` (``1 .. 31``; ``0`` adds no rounding term and does not shift)."""
    def __init__(self):
        super().__init__({
            "ma":    unsigned(15),
            "mb":    unsigned(15),
            "shift": unsigned(5),
        })


def _check_lanes(lanes):
    if isinstance(lanes, bool):
        raise UserError(f"ResidualAdder lanes must be an integer, not {lanes!r}")
    try:
        lanes = operator.index(lanes)
    except TypeError:
        raise UserError(f"ResidualAdder lanes must be an integer, not {lanes!r}") from None
    if not 1 <= lanes <= MAX_LANES:
        raise UserError(f"ResidualAdder lanes is {lanes}; choose 1 .. {MAX_LANES}")
    return lanes


def _check_tag_shape(tag_shape, unit):
    try:
        return Shape.cast(tag_shape)
    except TypeError:
        raise UserError(f"{unit} tag_shape must be a shape (e.g. unsigned(8)), "
                        f"not {tag_shape!r}") from None


class ResidualAdder(wiring.Component):
    """Pipelined residual add of ``lanes`` INT8 pairs per transfer, with back-pressure.

    Parameters
    ----------
    lanes : int
        Pairs added per transfer (``1 .. 256``).
    tag_shape : shape-like
        Shape of a tag carried unchanged from input to output.

    Members
    -------
    i : ``In(stream.Signature({a, b: ArrayLayout(signed(8), lanes), tag}))``
    o : ``Out(stream.Signature({value: ArrayLayout(signed(8), lanes), tag}))``
    params : ``In(ResidualParams())``
        Held constant from the cycle a job's first input transfers until ``busy`` falls
        after its last output (change it only while ``busy`` is 0).
    busy : ``Out(1)``
        High while any input is inside the pipeline.

    ``RESIDUAL_LATENCY`` cycles from an input transfer to its output's ``valid`` when never
    stalled; one transfer per cycle. The pipeline stalls as a whole while its output is held
    (``o.valid & ~o.ready``); ``i.ready`` is ``~o.valid | o.ready``.
    """

    def __init__(self, lanes=1, tag_shape=unsigned(1)):
        try:
            self._lanes = _check_lanes(lanes)
            self._tag_shape = _check_tag_shape(tag_shape, "ResidualAdder")
        except UserError:
            self._MustUse__silence = True    # a refused component is not a forgotten one
            raise
        lane_array = data.ArrayLayout(signed(8), self._lanes)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "a":   lane_array,
                "b":   lane_array,
                "tag": self._tag_shape,
            }))),
            "o": Out(stream.Signature(data.StructLayout({
                "value": lane_array,
                "tag":   self._tag_shape,
            }))),
            "params": In(ResidualParams()),
            "busy": Out(1),
        })

    @property
    def lanes(self):
        """Pairs added per transfer."""
        return self._lanes

    @property
    def tag_shape(self):
        return self._tag_shape

    @property
    def latency(self):
        """Cycles from an input transfer to its output (never stalled)."""
        return RESIDUAL_LATENCY

    @property
    def multipliers(self):
        """18x18 multipliers used: two per lane."""
        return RESIDUAL_MULTIPLIERS_PER_LANE * self._lanes

    def elaborate(self, platform):
        m = Module()

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
        ]

        stages = RESIDUAL_LATENCY
        valid = [Signal(name=f"valid_{n}") for n in range(stages)]
        tags = [Signal(self._tag_shape, name=f"tag_{n}") for n in range(stages)]
        with m.If(advance):
            m.d.sync += [valid[0].eq(self.i.valid), tags[0].eq(self.i.payload.tag)]
            for n in range(1, stages):
                m.d.sync += [valid[n].eq(valid[n - 1]), tags[n].eq(tags[n - 1])]

        # The parameters are static during a job: one free-running register decouples them
        # from wherever they come from; it loads in the same cycle as stage 0.
        ma = Signal(unsigned(15), reset_less=True)
        mb = Signal(unsigned(15), reset_less=True)
        shift = Signal(unsigned(5), reset_less=True)
        rounding = Signal(unsigned(31), reset_less=True)
        m.d.sync += [
            ma.eq(self.params.ma),
            mb.eq(self.params.mb),
            shift.eq(self.params.shift),
            rounding.eq(Const(1, 32) << shift >> 1),
        ]

        for lane in range(self._lanes):
            # Stage 0: the operands as they come.
            a_in = Signal(signed(8), name=f"a_in_{lane}", reset_less=True)
            b_in = Signal(signed(8), name=f"b_in_{lane}", reset_less=True)
            with m.If(advance):
                m.d.sync += [a_in.eq(self.i.payload.a[lane]), b_in.eq(self.i.payload.b[lane])]

            # Stages 1-2 (inside the multipliers) and 3: the products, then a fabric register.
            products = []
            for name, x, k in (("a", a_in, ma), ("b", b_in, mb)):
                mult = PipelinedMultiplier(signed(8), unsigned(15))
                m.submodules[f"mult_{name}_{lane}"] = mult
                m.d.comb += [mult.a.eq(x), mult.b.eq(k), mult.en.eq(advance)]
                product = Signal(signed(24), name=f"p_{name}_{lane}", reset_less=True)
                with m.If(advance):
                    m.d.sync += product.eq(mult.p)
                products.append(product)
            stage = 1 + MULTIPLIER_LATENCY

            # Stage 4: the sum (|sum| <= 2 * 128 * (2^15 - 1) < 2^23).
            total = Signal(signed(25), name=f"sum_{lane}", reset_less=True)
            # Stage 5: plus 2^(S-1) (< 2^30, so the result fits 32 bits signed).
            rounded = Signal(signed(32), name=f"rounded_{lane}", reset_less=True)
            # Stages 6-7: arithmetic shift right by S, in a byte step and a bit step.
            coarse = Signal(signed(32), name=f"coarse_{lane}", reset_less=True)
            fine = Signal(signed(32), name=f"fine_{lane}", reset_less=True)
            # Stage 8 (the output register): saturate to INT8.
            high = fine[7:32]
            fits = (high == 0) | (high == (1 << 25) - 1)
            with m.If(advance):
                m.d.sync += [
                    total.eq(products[0] + products[1]),
                    rounded.eq(total + rounding),
                    coarse.eq(rounded >> (shift & 0b11000)),
                    fine.eq(coarse >> shift[0:3]),
                    self.o.payload.value[lane].eq(
                        Mux(fits, fine[0:8].as_signed(), Mux(fine[31], -128, 127))),
                ]
            assert stage + 6 == stages, "RESIDUAL_LATENCY disagrees with the pipeline"

        m.d.comb += [
            self.o.valid.eq(valid[stages - 1]),
            self.o.payload.tag.eq(tags[stages - 1]),
            self.busy.eq(Cat(valid).any()),
        ]
        return m
