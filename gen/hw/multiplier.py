"""A multiplier with registered inputs and output, inside the DSP block where there is one.

On ECP5 the 18x18 multiplier's combinational delay (about 3.9 ns at speed grade 6) leaves
little of an 8 ns cycle for the routing between fabric flip-flops and the DSP column, and the
placer cannot keep thousands of flip-flops next to the DSPs. MULT18X18D has its own input and
output registers: using them leaves only routing on the fabric paths. yosys does not pack
fabric registers into ECP5 DSPs, so on that platform the primitive is instantiated directly;
everywhere else (simulation, other targets) the same behaviour is described in plain RTL.
The instance itself is simulated with ``verif/cells/mult18x18d.v`` (checked against the plain
RTL on every INT8 x INT8 pair by ``verif/test_multiplier_model.py``, and part of the netlist
simulation of ``verif/test_netlist.py``).
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, ResetSignal, Shape, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PipelinedMultiplier", "MULTIPLIER_LATENCY", "DSP_PORT_BITS"]

#: Registers from operands to product: input register, output register.
MULTIPLIER_LATENCY = 2
#: Signed operand width of one ECP5 MULT18X18D port.
DSP_PORT_BITS = 18


def _uses_ecp5_dsp(platform):
    return platform is not None and getattr(platform, "family", None) == "ecp5"


class PipelinedMultiplier(wiring.Component):
    """``p = a * b``, ``MULTIPLIER_LATENCY`` cycles after ``a`` and ``b`` (while ``en``).

    Parameters
    ----------
    a_shape, b_shape : shape-like
        Operand shapes; each must fit an 18-bit signed port (unsigned up to 17 bits).

    Members
    -------
    a, b : ``In``
        Operands.
    en : ``In(1, init=1)``
        Clock enable of both register stages.
    p : ``Out``
        The exact product.
    """

    def __init__(self, a_shape, b_shape):
        self._a_shape = Shape.cast(a_shape)
        self._b_shape = Shape.cast(b_shape)
        for name, shape in (("a", self._a_shape), ("b", self._b_shape)):
            bits = shape.width + (0 if shape.signed else 1)
            if bits > DSP_PORT_BITS:
                raise ValueError(f"operand {name} ({shape}) does not fit an 18-bit signed "
                                 f"multiplier port")
        width = self._a_shape.width + self._b_shape.width
        mixed = self._a_shape.signed != self._b_shape.signed
        super().__init__({
            "a": In(self._a_shape),
            "b": In(self._b_shape),
            "en": In(1, init=1),
            # A mixed-sign product is signed and needs one bit more than the operands.
            "p": Out(Shape(width + mixed, self._a_shape.signed or self._b_shape.signed)),
        })

    def elaborate(self, platform):
        m = Module()
        if _uses_ecp5_dsp(platform):
            a18 = Signal(signed(DSP_PORT_BITS))
            b18 = Signal(signed(DSP_PORT_BITS))
            p36 = Signal(signed(2 * DSP_PORT_BITS))
            m.d.comb += [a18.eq(self.a), b18.eq(self.b), self.p.eq(p36)]
            ports = {}
            for k in range(DSP_PORT_BITS):
                ports[f"i_A{k}"] = a18[k]
                ports[f"i_B{k}"] = b18[k]
                ports[f"i_C{k}"] = Const(0, 1)
            for k in range(2 * DSP_PORT_BITS):
                ports[f"o_P{k}"] = p36[k]
            m.submodules.dsp = Instance(
                "MULT18X18D",
                p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
                p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
                p_REG_INPUTC_CLK="NONE",
                p_REG_PIPELINE_CLK="NONE",
                p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
                p_GSR="DISABLED", p_RESETMODE="SYNC", p_SOURCEB_MODE="B_SHIFT",
                p_MULT_BYPASS="DISABLED", p_CAS_MATCH_REG="FALSE",
                i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1),
                i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
                i_CLK0=ClockSignal("sync"), i_CE0=self.en, i_RST0=ResetSignal("sync"),
                **ports)
        else:
            a_reg = Signal(self._a_shape)
            b_reg = Signal(self._b_shape)
            with m.If(self.en):
                m.d.sync += [a_reg.eq(self.a), b_reg.eq(self.b), self.p.eq(a_reg * b_reg)]
        return m
