"""The classifier's decision (docs/vit.md section 1.5): the first index of a row's maximum.

A running maximum over each row of ``length`` INT8 values, one value per cycle; a later value
replaces the maximum only if strictly greater, so ties keep the first index.
"""

import operator

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...errors import UserError

__all__ = ["Argmax", "ARGMAX_LATENCY", "MAX_ARGMAX_LENGTH"]

#: Cycles from a row's last input transfer to its result's ``valid``.
ARGMAX_LATENCY = 1
#: Longest row.
MAX_ARGMAX_LENGTH = 2 ** 16


def _check_length(length):
    if isinstance(length, bool):
        raise UserError(f"Argmax length must be an integer, not {length!r}")
    try:
        length = operator.index(length)
    except TypeError:
        raise UserError(f"Argmax length must be an integer, not {length!r}") from None
    if not 1 <= length <= MAX_ARGMAX_LENGTH:
        raise UserError(f"Argmax length is {length}; choose a row length between 1 and "
                        f"{MAX_ARGMAX_LENGTH} (the number of classes)")
    return length


class Argmax(wiring.Component):
    """First index of the maximum of each row of ``length`` INT8 values.

    Parameters
    ----------
    length : int
        Values per row (``1 .. 65536``); rows are counted, there is no ``last``.

    Members
    -------
    i : ``In(stream.Signature(signed(8)))``
        The values, row after row.
    o : ``Out(stream.Signature({index: range(length), value: signed(8)}))``
        One result per row: the first ``index`` (0-based) of the row's maximum ``value``.

    One input per cycle; the result is valid ``ARGMAX_LATENCY`` cycles after the row's last
    input. While a result waits for ``o.ready`` the next row is taken up to (not including)
    its last value, so the unit only stalls if two results would be pending.
    """

    def __init__(self, length):
        try:
            self._length = _check_length(length)
        except UserError:
            self._MustUse__silence = True    # a refused component is not a forgotten one
            raise
        super().__init__({
            "i": In(stream.Signature(signed(8))),
            "o": Out(stream.Signature(data.StructLayout({
                "index": range(self._length),
                "value": signed(8),
            }))),
        })

    @property
    def length(self):
        """Values per row."""
        return self._length

    @property
    def index_bits(self):
        """Width of ``o.payload.index`` (0 for a row of one value)."""
        return (self._length - 1).bit_length()

    @property
    def latency(self):
        """Cycles from a row's last input to its result (never stalled)."""
        return ARGMAX_LATENCY

    def elaborate(self, platform):
        m = Module()
        last_index = self._length - 1

        count = Signal(range(self._length))
        best_value = Signal(signed(8), reset_less=True)
        best_index = Signal(range(self._length), reset_less=True)

        x = self.i.payload
        first = count == 0
        last = count == last_index
        take = first | (x > best_value)
        new_value = Mux(take, x, best_value)
        new_index = Mux(take, count, best_index)

        m.d.comb += self.i.ready.eq(~last | ~self.o.valid | self.o.ready)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [best_value.eq(new_value), best_index.eq(new_index)]
            with m.If(last):
                m.d.sync += [
                    count.eq(0),
                    self.o.valid.eq(1),
                    self.o.payload.value.eq(new_value),
                    self.o.payload.index.eq(new_index),
                ]
            with m.Else():
                m.d.sync += count.eq(count + 1)
        return m
