"""The activation table (docs/vit.md section 1.3): ``h = act[h_pre + 128]``.

A 256 x INT8 table (GELU, ReLU, anything) in a block RAM, written through ``table_wr`` and
looked up by a stream of INT8 values. The table index ``v + 128`` is ``v`` with its sign bit
inverted, so the lookup needs no adder. The read port's enable is the pipeline's advance
signal: while the output is held the read data register keeps its value, exactly like every
other pipeline register, so a stall neither drops nor repeats a lookup (no skid buffer).
"""

import operator

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ...errors import UserError
from .residual import _check_tag_shape

__all__ = ["ActivationTable", "ACTIVATION_LATENCY", "TABLE_DEPTH", "table_write_layout"]

#: Registers from an accepted input to its output: read data, read data register (the block
#: RAM's output register), output register.
ACTIVATION_LATENCY = 3
#: Entries in the table: one per INT8 value.
TABLE_DEPTH = 256


def table_write_layout():
    """Payload of ``table_wr``: the table index ``addr`` (``v + 128``) and its INT8 ``data``."""
    return data.StructLayout({"addr": unsigned(8), "data": signed(8)})


def _check_init(init):
    if init is None:
        return [0] * TABLE_DEPTH
    try:
        values = [operator.index(v) for v in init]
    except TypeError:
        raise UserError("ActivationTable init must be 256 integers") from None
    if len(values) != TABLE_DEPTH or any(not -128 <= v <= 127 for v in values):
        raise UserError(f"ActivationTable init must be {TABLE_DEPTH} integers in -128 .. 127 "
                        f"(got {len(values)} values)")
    return values


class ActivationTable(wiring.Component):
    """Pipelined table lookup of INT8 values, with back-pressure.

    Parameters
    ----------
    tag_shape : shape-like
        Shape of a tag carried unchanged from input to output.
    init : 256 ints in -128..127, optional
        The table after configuration (default all zeros); ``init[k]`` is ``act[k]``.

    Members
    -------
    i : ``In(stream.Signature({value: signed(8), apply: 1, tag}))``
        ``apply`` 1: the output is ``table[value + 128]``; 0: ``value`` unchanged.
    o : ``Out(stream.Signature({value: signed(8), tag}))``
    table_wr : ``In(stream.Signature({addr: unsigned(8), data: signed(8)}))``
        Writes ``table[addr] = data`` (``addr`` is the table index ``v + 128``); always ready,
        one write per cycle. Write only while ``busy`` is 0 and ``i.valid`` is 0: a lookup in
        flight during a write of its entry may see the old or the new value.
    busy : ``Out(1)``
        High while any input is inside the pipeline.

    ``ACTIVATION_LATENCY`` cycles from an input transfer to its output's ``valid`` when never
    stalled; one transfer per cycle. The pipeline stalls as a whole while its output is held
    (``o.valid & ~o.ready``); ``i.ready`` is ``~o.valid | o.ready``.
    """

    def __init__(self, tag_shape=unsigned(1), *, init=None):
        try:
            self._tag_shape = _check_tag_shape(tag_shape, "ActivationTable")
            self._init = _check_init(init)
        except UserError:
            self._MustUse__silence = True    # a refused component is not a forgotten one
            raise
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "value": signed(8),
                "apply": 1,
                "tag":   self._tag_shape,
            }))),
            "o": Out(stream.Signature(data.StructLayout({
                "value": signed(8),
                "tag":   self._tag_shape,
            }))),
            "table_wr": In(stream.Signature(table_write_layout())),
            "busy": Out(1),
        })

    @property
    def tag_shape(self):
        return self._tag_shape

    @property
    def init(self):
        """The initial table (a copy)."""
        return list(self._init)

    @property
    def latency(self):
        """Cycles from an input transfer to its output (never stalled)."""
        return ACTIVATION_LATENCY

    def elaborate(self, platform):
        m = Module()

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
        ]

        stages = ACTIVATION_LATENCY
        valid = [Signal(name=f"valid_{n}") for n in range(stages)]
        tags = [Signal(self._tag_shape, name=f"tag_{n}") for n in range(stages)]
        values = [Signal(signed(8), name=f"value_{n}", reset_less=True) for n in range(stages - 1)]
        applies = [Signal(name=f"apply_{n}", reset_less=True) for n in range(stages - 1)]
        with m.If(advance):
            m.d.sync += [valid[0].eq(self.i.valid), tags[0].eq(self.i.payload.tag),
                         values[0].eq(self.i.payload.value), applies[0].eq(self.i.payload.apply)]
            for n in range(1, stages):
                m.d.sync += [valid[n].eq(valid[n - 1]), tags[n].eq(tags[n - 1])]
            for n in range(1, stages - 1):
                m.d.sync += [values[n].eq(values[n - 1]), applies[n].eq(applies[n - 1])]

        m.submodules.table = table = memory.Memory(shape=signed(8), depth=TABLE_DEPTH,
                                                   init=self._init)
        write = table.write_port()
        read = table.read_port()
        m.d.comb += [
            write.addr.eq(self.table_wr.payload.addr),
            write.data.eq(self.table_wr.payload.data),
            write.en.eq(self.table_wr.valid),
            self.table_wr.ready.eq(1),
            # Stage 0: the read data register (the block RAM's own), loaded as the input
            # transfers and held while the pipeline stalls.
            read.addr.eq(Cat(self.i.payload.value[0:7], ~self.i.payload.value[7])),
            read.en.eq(advance),
        ]

        # Stage 1: a register after the read port; stage 2: pass or apply (the output register).
        looked_up = Signal(signed(8), reset_less=True)
        with m.If(advance):
            m.d.sync += [
                looked_up.eq(read.data),
                self.o.payload.value.eq(Mux(applies[1], looked_up, values[1])),
            ]
        m.d.comb += [
            self.o.valid.eq(valid[stages - 1]),
            self.o.payload.tag.eq(tags[stages - 1]),
            self.busy.eq(Cat(valid).any()),
        ]
        return m
