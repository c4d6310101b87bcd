"""The ViT accelerator core: the NSA and NMP engines in a ring of stream FIFOs (ViA's
two reuse engines, docs/vit.md section 3).

``image`` pixels enter the NSA engine, which embeds them and runs the first half-layer; each
half-layer's message goes through a FIFO to the other engine; the NSA engine's head program
sends the class and logits out on ``result``. With two images in flight both engines work at
the same time, each on a half-layer of a different image.
"""

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ...errors import UserError
from ..attention.memory import BlockRamFIFO, shaped_stream
from .engine import ViTEngine
from .layout import ViTDesign


__all__ = ["ViTCore"]


class ViTCore(wiring.Component):
    """Two engines and two FIFOs; the host side is three streams.

    Parameters
    ----------
    design : ViTDesign
    stall_ports : bool
        For verification: add ``stall_nmp`` and ``stall_nsa`` inputs that, while high, hold
        the FIFO-to-engine stream (neither valid nor ready), so a testbench can put random
        back-pressure and gaps on the streams between the engines. Off in a built design.

    Members
    -------
    load : ``In(stream.Signature({engine, beat}))``
        ``engine`` 0 (NSA) or 1 (NMP), ``beat`` that engine's load beat.
    image : ``In(stream.Signature(unsigned(8)))``
        Pixels (0..16), 64 an image, in patch order (``gen.hw.vit.layout``).
    result : ``Out(stream.Signature(...))``
        ``{cls, logits}`` per image, in the order the images came.
    nsa_busy, nmp_busy : ``Out(1)``
    nsa_cycles, nmp_cycles, nsa_op_cycles, nmp_op_cycles : ``Out(32)``
        Each engine's busy cycles and kernel-op cycles.
    to_nmp_valid, to_nmp, to_nsa_valid, to_nsa : ``Out(1)``, ``Out(MessageBeat)``
        Every beat that passes into each FIFO, in the cycle it does (a view for the
        testbench; nothing waits on it).
    """

    def __init__(self, design, *, stall_ports=False):
        if not isinstance(design, ViTDesign):
            self._MustUse__silence = True
            raise UserError(f"design must be a ViTDesign, not {design!r}")
        self._design = design
        self._stall_ports = bool(stall_ports)
        self._nsa = design.engine_shape("nsa")
        self._nmp = design.engine_shape("nmp")
        width = max(self._nsa.load_layout.size, self._nmp.load_layout.size)
        msg = self._nsa.message_layout
        stalls = {"stall_nmp": In(1), "stall_nsa": In(1)} if stall_ports else {}
        super().__init__({
            **stalls,
            "load":   In(stream.Signature(data.StructLayout({"engine": unsigned(1),
                                                             "beat": unsigned(width)}))),
            "image":  In(stream.Signature(unsigned(8))),
            "result": Out(stream.Signature(self._nsa.result_layout)),
            "nsa_busy": Out(1), "nmp_busy": Out(1),
            "nsa_cycles": Out(32), "nmp_cycles": Out(32),
            "nsa_op_cycles": Out(32), "nmp_op_cycles": Out(32),
            "to_nmp_valid": Out(1), "to_nmp": Out(msg),
            "to_nsa_valid": Out(1), "to_nsa": Out(msg),
        })

    @property
    def design(self):
        return self._design

    def elaborate(self, platform):
        m = Module()
        d = self._design
        m.submodules.nsa = nsa = ViTEngine(self._nsa)
        m.submodules.nmp = nmp = ViTEngine(self._nmp)
        msg = self._nsa.message_layout
        for name, src, dst, valid, view, stall in (
                ("fifo_to_nmp", nsa, nmp, self.to_nmp_valid, self.to_nmp, "stall_nmp"),
                ("fifo_to_nsa", nmp, nsa, self.to_nsa_valid, self.to_nsa, "stall_nsa")):
            # In block RAM, its words leaving from registers beside the block RAMs: the word
            # of an inferred memory leaves the block RAM 5.8 ns after the clock on ECP5, and
            # its route decided the clock (the critical path at 89.2 and at 97.2 MHz).
            queue = BlockRamFIFO(width=msg.size, depth=d.fifo_depth)
            m.submodules[name] = queue
            wiring.connect(m, src.msg_out, shaped_stream(queue.w_stream, msg))
            out = shaped_stream(queue.r_stream, msg)
            if self._stall_ports:
                hold = getattr(self, stall)
                m.d.comb += [dst.msg_in.valid.eq(out.valid & ~hold),
                             dst.msg_in.payload.eq(out.payload),
                             out.ready.eq(dst.msg_in.ready & ~hold)]
            else:
                wiring.connect(m, out, dst.msg_in)
            m.d.comb += [valid.eq(src.msg_out.valid & src.msg_out.ready),
                         view.eq(src.msg_out.payload)]

        # Host loads to the engine they name, through a registered queue each: the load beat
        # fans out to every memory of an engine, and must not start at the host link.
        for index, engine in enumerate((nsa, nmp)):
            layout = engine.shape.load_layout
            queue = fifo.SyncFIFOBuffered(width=layout.size, depth=2)
            m.submodules[f"load_to_{('nsa', 'nmp')[index]}"] = queue
            with m.If(self.load.payload.engine == index):
                m.d.comb += [queue.w_stream.valid.eq(self.load.valid),
                             queue.w_stream.payload.eq(self.load.payload.beat[:layout.size]),
                             self.load.ready.eq(queue.w_stream.ready)]
            wiring.connect(m, shaped_stream(queue.r_stream, layout), engine.load)
        wiring.connect(m, wiring.flipped(self.image), nsa.image)
        wiring.connect(m, nsa.result, wiring.flipped(self.result))
        m.d.comb += [
            self.nsa_busy.eq(nsa.busy), self.nmp_busy.eq(nmp.busy),
            self.nsa_cycles.eq(nsa.cycles), self.nmp_cycles.eq(nmp.cycles),
            self.nsa_op_cycles.eq(nsa.op_cycles), self.nmp_op_cycles.eq(nmp.op_cycles),
        ]
        return m
