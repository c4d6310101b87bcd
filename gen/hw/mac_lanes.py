"""Broadcast multiply-accumulate lanes: ``acc[l] += x * w[l]`` for every lane ``l`` per beat.

The sparse attention kernel (docs/sparse_attention.md, section 6) runs every product on this one
structure: per beat one INT8 operand ``x`` is broadcast to all lanes and one word ``w`` of
``lanes`` INT8 values is read; each lane sums its products in an INT32 accumulator.

Lanes ``2i`` and ``2i + 1`` share ``x``, so with packing they share one multiplier
(:class:`~gen.hw.packing.PackedMultiplierPair`) where the target's ports allow it (Xilinx
DSP48E2: yes; ECP5 MULT18X18D: no for INT8 x INT8, see :mod:`gen.hw.packing`). An odd last lane
gets a multiplier of its own.
"""

import operator

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..errors import UserError
from .multiplier import MULTIPLIER_LATENCY
from .packing import (ECP5_MULT18X18D, MultiplierPorts, PackedMultiplierPair, packing_plan,
                      pipelined_product)

__all__ = ["MacLanes", "OPERAND_BITS", "ACC_BITS", "PRODUCT_LATENCY", "MAC_LANES_LATENCY",
           "resolve_packing", "lane_multipliers"]

OPERAND_BITS = 8
ACC_BITS = 32
#: Cycles from a beat to its products: the multiplier, then one fabric register (the unpacking,
#: or on unpaired lanes a plain register: the DSP output may sit far from the accumulator).
PRODUCT_LATENCY = MULTIPLIER_LATENCY + 1
#: Cycles from a beat being taken to ``acc`` including it (and ``done`` on ``last``): the
#: products, then the accumulator register.
MAC_LANES_LATENCY = PRODUCT_LATENCY + 1


def resolve_packing(ports, packing):
    """``(plan, packed)`` of MacLanes' ``ports`` and ``packing`` request, without hardware.

    ``packing`` is True, False or ``"auto"``; True raises ``UserError`` if ``ports`` cannot take
    two INT8 products, ``"auto"`` packs exactly when they can.
    """
    if not isinstance(ports, MultiplierPorts):
        raise UserError(f"MacLanes ports must be a MultiplierPorts, not {ports!r}")
    if packing not in (True, False, "auto"):
        raise UserError(f"MacLanes packing must be True, False or 'auto', not {packing!r}")
    plan = packing_plan(ports, OPERAND_BITS, OPERAND_BITS)
    if packing is True and not plan.can_pack:
        raise UserError(f"MacLanes(packing=True): {plan.reason}")
    return plan, plan.can_pack and packing is not False


def lane_multipliers(lanes, packed):
    """Hardware multipliers of ``lanes`` lanes (with packing an odd last lane has its own)."""
    return (lanes + 1) // 2 if packed else lanes


class MacLanes(wiring.Component):
    """``lanes`` INT8 x INT8 -> INT32 multiply-accumulators fed by one broadcast operand.

    A sum runs from a beat with ``first`` to a beat with ``last`` (both on a one-beat sum).
    Beats are taken when ``valid`` is high; there is no back-pressure. ``latency`` cycles after
    the ``last`` beat was taken, ``done`` is high for one cycle (one pulse per sum: two one-beat
    sums in a row give two consecutive high cycles) and ``acc`` shows the sums;
    ``acc`` holds them until the next sum's ``first`` beat reaches the accumulators (also
    ``latency`` cycles after it was taken), so a new sum may start right after ``last``.
    A beat without ``first`` adds onto whatever ``acc`` holds.

    Parameters
    ----------
    lanes : int
        Number of lanes (any count >= 1; with packing an odd last lane is unpaired).
        On ECP5 (the default ports) every lane has its own MULT18X18D: two INT8 x INT8
        products do not fit an 18x18 multiplier.
    ports : MultiplierPorts
        The target's multiplier, ``ECP5_MULT18X18D`` by default.
    packing : bool or "auto"
        Pair lanes onto one multiplier. ``True`` raises ``UserError`` if ``ports`` cannot take
        two INT8 products; ``"auto"`` packs exactly when they can.

    Members
    -------
    valid, first, last : ``In(1)``
    x : ``In(signed(8))``
    w : ``In(data.ArrayLayout(signed(8), lanes))``
    done : ``Out(1)``
    acc : ``Out(data.ArrayLayout(signed(32), lanes))``
    """

    def __init__(self, lanes, *, ports=ECP5_MULT18X18D, packing="auto"):
        try:
            try:
                self._lanes = operator.index(lanes)
            except TypeError:
                raise UserError(f"MacLanes lanes must be an integer, not {lanes!r}") from None
            if self._lanes < 1:
                raise UserError(f"MacLanes needs at least 1 lane, not {self._lanes}")
            self._plan, self._packing = resolve_packing(ports, packing)
        except UserError:
            self._MustUse__silence = True    # a refused component is not a forgotten one
            raise
        self._ports = ports
        super().__init__({
            "valid": In(1),
            "first": In(1),
            "last": In(1),
            "x": In(signed(OPERAND_BITS)),
            "w": In(data.ArrayLayout(signed(OPERAND_BITS), self._lanes)),
            "done": Out(1),
            "acc": Out(data.ArrayLayout(signed(ACC_BITS), self._lanes)),
        })

    @property
    def lanes(self):
        return self._lanes

    @property
    def packing(self):
        """Whether lane pairs share a multiplier (resolved from ``"auto"``)."""
        return self._packing

    @property
    def plan(self):
        return self._plan

    @property
    def products_per_multiplier(self):
        return 2 if self._packing else 1

    @property
    def multipliers(self):
        """Hardware multipliers used (an odd last lane has one of its own)."""
        return lane_multipliers(self._lanes, self._packing)

    @property
    def product_latency(self):
        """Cycles from a beat to its products (:data:`PRODUCT_LATENCY`)."""
        return PRODUCT_LATENCY

    @property
    def latency(self):
        """Cycles from a beat being taken to ``acc`` including it (:data:`MAC_LANES_LATENCY`)."""
        return MAC_LANES_LATENCY

    def elaborate(self, platform):
        m = Module()
        products = [None] * self._lanes
        unpaired = 0       # first lane with a multiplier of its own
        if self._packing:
            for pair in range(self._lanes // 2):
                unit = PackedMultiplierPair(self._ports, OPERAND_BITS, OPERAND_BITS)
                assert unit.latency == self.product_latency
                m.submodules[f"pair_{pair}"] = unit
                m.d.comb += [unit.x.eq(self.x), unit.w0.eq(self.w[2 * pair]),
                             unit.w1.eq(self.w[2 * pair + 1])]
                products[2 * pair], products[2 * pair + 1] = unit.p0, unit.p1
            unpaired = self._lanes // 2 * 2
        for lane in range(unpaired, self._lanes):
            p = pipelined_product(m, platform, f"mult_{lane}", self.x, self.w[lane])
            product = Signal(signed(2 * OPERAND_BITS), name=f"prod_{lane}", reset_less=True)
            m.d.sync += product.eq(p)
            products[lane] = product

        # valid/first/last travel beside the products.
        flags = Signal(3 * self.product_latency)
        m.d.sync += flags.eq(Cat(self.valid, self.first, self.last, flags[:-3]))
        valid, first, last = flags[-3], flags[-2], flags[-1]

        m.d.sync += self.done.eq(valid & last)
        for lane in range(self._lanes):
            acc = self.acc[lane]
            with m.If(valid):
                m.d.sync += acc.eq(products[lane] + Mux(first, 0, acc))
        return m
