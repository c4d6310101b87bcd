"""Two products that share one operand, computed by one wide multiplier.

A multiplier of ``a_bits x b_bits`` signed ports can compute ``x * w0`` and ``x * w1`` at once:
it multiplies ``x`` by ``(w0 << s) + w1`` and the product ``P = (x*w0 << s) + x*w1`` holds both
results in two fields. The low field ``x*w1`` is read back sign-extended from ``P[:s]``, the high
field is ``(P - low) >> s``, which is ``(P >> s) + P[s-1]`` (the borrow that a negative low field
took from the high field is given back). This is exact as long as the low product fits ``s``
signed bits and the packed operand ``(w0 << s) + w1`` fits a port.

Field offset ``s``
------------------
The low product of a ``shared_bits`` x ``packed_bits`` signed pair needs exactly
``shared_bits + packed_bits`` signed bits (one more than the magnitudes suggest, because
``-128 * -128 = 16384`` needs the 16th bit), so that is the smallest offset that works and the
default. The packed operand then needs ``packed_bits + s + 1`` signed bits: ``(w0 << s) + w1`` is
as low as ``-2^(packed_bits-1+s) - 2^(packed_bits-1)``, just past the ``packed_bits + s`` range.

* Xilinx DSP48E2 (27x18): INT8 x INT8 packs with ``s = 16`` (25-bit packed operand on the 27-bit
  port, ``x`` on the 18-bit port, 33-bit product). Xilinx's white paper WP487 uses ``s = 18``
  because it lets several packed products accumulate inside the DSP's 48-bit P register before
  unpacking, which needs guard bits in the low field. Here every product is unpacked at once
  into its lane's INT32 accumulator in fabric, so guard bits buy nothing and the minimum keeps
  the product and unpacking adder narrowest. ``offset=18`` (the largest that fits 27 bits) may
  still be requested.
* Lattice ECP5 MULT18X18D (18x18): INT8 x INT8 does not pack (the packed operand needs 25 bits).
  INT8 x INT4 does (``s = 12``, a 17-bit packed operand); INT8 x INT5 already needs 19 bits.
  nextpnr-ecp5 only places MULT18X18D (the MULT9X9D half-blocks are not supported), so the
  generator uses one MULT18X18D per INT8 x INT8 product on ECP5, and two products per
  MULT18X18D only when the per-lane (packed) operands are at most 4 bits wide.
"""

import operator
from dataclasses import dataclass

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError
from .multiplier import DSP_PORT_BITS, MULTIPLIER_LATENCY, PipelinedMultiplier

__all__ = ["MultiplierPorts", "ECP5_MULT18X18D", "XILINX_DSP48E2", "PackingPlan",
           "packing_plan", "PackedMultiplierPair", "pipelined_product"]


@dataclass(frozen=True)
class MultiplierPorts:
    """Signed operand widths of one hardware multiplier.

    Parameters
    ----------
    a_bits, b_bits : int
        Signed width of each operand port (an 18x18 multiplier takes -2^17 .. 2^17-1 on both).
    name : str
        What to call it in messages.
    """
    a_bits: int
    b_bits: int
    name: str = "generic multiplier"

    def __post_init__(self):
        for field in ("a_bits", "b_bits"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise UserError(f"MultiplierPorts.{field} must be an integer >= 2, "
                                f"not {value!r}")

    @property
    def wide_bits(self):
        return max(self.a_bits, self.b_bits)

    @property
    def narrow_bits(self):
        return min(self.a_bits, self.b_bits)

    def __str__(self):
        return f"{self.name} ({self.a_bits}x{self.b_bits})"


#: Lattice ECP5 DSP slice multiplier (the only one nextpnr-ecp5 places).
ECP5_MULT18X18D = MultiplierPorts(18, 18, "ECP5 MULT18X18D")
#: Xilinx UltraScale+ DSP slice (27-bit A/D pre-adder port, 18-bit B port).
XILINX_DSP48E2 = MultiplierPorts(27, 18, "Xilinx DSP48E2")


@dataclass(frozen=True)
class PackingPlan:
    """How products of a ``shared_bits`` x ``packed_bits`` pair map onto one multiplier.

    Members
    -------
    products : int
        Products per multiplier: 2 when packing works, else 1.
    offset : int or None
        Field offset ``s`` of the high product (None when not packing).
    packed_operand_bits : int or None
        Signed width of ``(w0 << s) + w1``.
    reason : str or None
        Why two products do not fit (None when they do).
    """
    ports: MultiplierPorts
    shared_bits: int
    packed_bits: int
    products: int
    offset: object = None
    packed_operand_bits: object = None
    reason: object = None

    @property
    def can_pack(self):
        return self.products == 2

    @property
    def product_bits(self):
        """Signed width of one unpacked product ``x * w``."""
        return self.shared_bits + self.packed_bits

    @property
    def multiplier_product_bits(self):
        """Signed width of the product the multiplier computes."""
        if self.can_pack:
            return self.shared_bits + self.packed_operand_bits
        return self.product_bits


def _fits(ports, x_bits, y_bits):
    return ((x_bits <= ports.a_bits and y_bits <= ports.b_bits) or
            (x_bits <= ports.b_bits and y_bits <= ports.a_bits))


def _bits(name, value):
    try:
        value = operator.index(value)
    except TypeError:
        raise UserError(f"{name} must be an integer, not {value!r}") from None
    if value < 1:
        raise UserError(f"{name} must be at least 1, not {value}")
    return value


def packing_plan(ports, shared_bits, packed_bits, offset=None):
    """Plan two ``x * w0``, ``x * w1`` products (signed widths) on one ``ports`` multiplier.

    ``offset`` asks for a field offset ``s``; by default the smallest that works
    (``shared_bits + packed_bits``). Returns a :class:`PackingPlan`; raises ``UserError`` if
    even one product does not fit the multiplier or ``offset`` is too small.
    """
    if not isinstance(ports, MultiplierPorts):
        raise UserError(f"ports must be a MultiplierPorts, not {ports!r}")
    shared_bits = _bits("shared_bits", shared_bits)
    packed_bits = _bits("packed_bits", packed_bits)
    if not _fits(ports, shared_bits, packed_bits):
        raise UserError(f"a {shared_bits}-bit x {packed_bits}-bit product does not fit the "
                        f"{ports}: use narrower operands or a wider multiplier")
    minimum = shared_bits + packed_bits
    if offset is not None:
        offset = _bits("offset", offset)
        if offset < minimum:
            raise UserError(f"offset {offset} is too small: the low product of a "
                            f"{shared_bits}-bit x {packed_bits}-bit pair needs {minimum} "
                            f"signed bits; use offset >= {minimum} (or leave it unset)")
    s = minimum if offset is None else offset
    operand_bits = packed_bits + s + 1
    if _fits(ports, shared_bits, operand_bits):
        return PackingPlan(ports, shared_bits, packed_bits, products=2, offset=s,
                           packed_operand_bits=operand_bits)

    # Not packable: say what would be.
    def operand_fits(packed, off):
        return _fits(ports, shared_bits, packed + off + 1)
    if offset is not None and operand_fits(packed_bits, minimum):
        largest = max(o for o in range(minimum, s) if operand_fits(packed_bits, o))
        hint = f"use offset <= {largest} (or leave it unset)"
    else:
        narrower = [p for p in range(1, packed_bits) if operand_fits(p, shared_bits + p)]
        hint = (f"use packed operands of at most {narrower[-1]} bits, " if narrower else "")
        hint += (f"a multiplier with a {operand_bits}-bit port (e.g. {XILINX_DSP48E2}) "
                 f"or packing=False")
    reason = (f"two {shared_bits}-bit x {packed_bits}-bit products sharing one operand need "
              f"a {operand_bits}-bit port for (w0 << {s}) + w1 and a {shared_bits}-bit port "
              f"for x, but the {ports} has {ports.a_bits}- and {ports.b_bits}-bit ports; "
              f"{hint}")
    return PackingPlan(ports, shared_bits, packed_bits, products=1, reason=reason)


def _uses_ecp5(platform):
    return platform is not None and getattr(platform, "family", None) == "ecp5"


def pipelined_product(m, platform, name, a, b):
    """``a * b`` with ``MULTIPLIER_LATENCY`` registers, placed in a hardware multiplier.

    On the ECP5 platform it instantiates MULT18X18D through :class:`PipelinedMultiplier`
    (operands must fit 18 bits); elsewhere it is plain RTL (registered inputs and output) that
    ``synth_xilinx`` maps to one DSP48E2. The registers belong in the DSP's A/B and P registers;
    yosys 0.70's ``xilinx_dsp`` pass leaves them in fabric flip-flops (Vivado would absorb
    them). Returns the product signal.
    """
    a_shape, b_shape = a.shape(), b.shape()
    fits_18 = all(s.width + (not s.signed) <= DSP_PORT_BITS for s in (a_shape, b_shape))
    if fits_18:
        mult = PipelinedMultiplier(a_shape, b_shape)
        m.submodules[name] = mult
        m.d.comb += [mult.a.eq(a), mult.b.eq(b)]
        return mult.p
    if _uses_ecp5(platform):
        raise UserError(f"{name}: a {a_shape.width}x{b_shape.width}-bit product does not fit "
                        f"ECP5's 18x18 MULT18X18D; generate for ECP5_MULT18X18D ports")
    a_reg = Signal(a_shape, name=f"{name}_a", reset_less=True)
    b_reg = Signal(b_shape, name=f"{name}_b", reset_less=True)
    p = Signal(signed(a_shape.width + b_shape.width), name=f"{name}_p", reset_less=True)
    m.d.sync += [a_reg.eq(a), b_reg.eq(b), p.eq(a_reg * b_reg)]
    return p


class PackedMultiplierPair(wiring.Component):
    """``p0 = x * w0`` and ``p1 = x * w1`` from one multiplication, ``latency`` cycles later.

    One multiplier computes ``x * ((w0 << s) + w1)``; a fabric register stage unpacks the
    product (see the module docstring). The pipeline runs every cycle (no enable).

    On the ECP5 platform the multiplier is one MULT18X18D with its input and output registers
    (:class:`~gen.hw.multiplier.PipelinedMultiplier`); nextpnr-ecp5 places no MULT9X9D, and an
    18x18 port takes ``(w0 << s) + w1`` only for ``packed_bits <= 4`` (with INT8 ``x``), so
    INT8 x INT8 pairs are refused there and callers use one MULT18X18D per INT8 product.
    Elsewhere (simulation, Xilinx) the registered product is plain RTL, which ``synth_xilinx``
    maps to one DSP48E2 (the add is its A+D pre-adder's job).

    Parameters
    ----------
    ports : MultiplierPorts
        The target multiplier (``XILINX_DSP48E2``, ``ECP5_MULT18X18D`` or any other).
    shared_bits, packed_bits : int
        Signed widths of ``x`` and of ``w0``, ``w1``.
    offset : int, optional
        Field offset ``s``; the minimum that works by default.

    Members
    -------
    x : ``In(signed(shared_bits))``
    w0, w1 : ``In(signed(packed_bits))``
    p0, p1 : ``Out(signed(shared_bits + packed_bits))``

    Raises ``UserError`` when the plan cannot pack (its reason says what to change).
    """

    def __init__(self, ports=XILINX_DSP48E2, shared_bits=8, packed_bits=8, *, offset=None):
        try:
            self._plan = packing_plan(ports, shared_bits, packed_bits, offset)
            if not self._plan.can_pack:
                raise UserError(f"PackedMultiplierPair: {self._plan.reason}")
        except UserError:
            self._MustUse__silence = True    # a refused component is not a forgotten one
            raise
        width = self._plan.product_bits
        super().__init__({
            "x": In(signed(self._plan.shared_bits)),
            "w0": In(signed(self._plan.packed_bits)),
            "w1": In(signed(self._plan.packed_bits)),
            "p0": Out(signed(width)),
            "p1": Out(signed(width)),
        })

    @property
    def plan(self):
        return self._plan

    @property
    def latency(self):
        """Cycles from ``x``, ``w0``, ``w1`` to ``p0``, ``p1``: multiplier, then unpacking."""
        return MULTIPLIER_LATENCY + 1

    def elaborate(self, platform):
        m = Module()
        s = self._plan.offset
        packed = Signal(signed(self._plan.packed_operand_bits))
        # On DSP48E2 this add is the A+D pre-adder; on ECP5 a few LUTs (the low bits pass).
        m.d.comb += packed.eq((self.w0 << s) + self.w1)
        product = pipelined_product(m, platform, "mult", self.x, packed)

        low = product[:s].as_signed()
        # (P - low) >> s without a wide subtractor: P[s-1] is set exactly when low < 0, i.e.
        # when the low field borrowed 2^s from the high one.
        high = (product >> s) + product[s - 1]
        m.d.sync += [self.p1.eq(low), self.p0.eq(high)]
        return m
