"""The ViT core behind its host link: UART (or a plain byte stream), the protocol engine,
clock-domain crossings and the core (``gen/host/VIT_PROTOCOL.md``)."""

import operator

from amaranth.hdl import Cat, DomainRenamer, Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ...errors import UserError
from ..uart import UARTReceiver, UARTTransmitter
from .bridge import (DEFAULT_BYTE_TIMEOUT, DEFAULT_IMAGE_FIFO_IMAGES,
                     DEFAULT_TURNAROUND_TIMEOUT, IMAGE_BYTES, ViTHostBridge)
from .system import ViTCore

__all__ = ["ViTHostSystem", "LOAD_FIFO_DEPTH"]

#: Beats the load FIFO holds (the core takes one a cycle; the link brings one a beat time).
LOAD_FIFO_DEPTH = 4


class ViTHostSystem(wiring.Component):
    """UART (or byte stream), :class:`~gen.hw.vit.bridge.ViTHostBridge` and
    :class:`~gen.hw.vit.system.ViTCore`.

    Parameters
    ----------
    design : ViTDesign
    uart_divisor : int or None
        ``host`` clock cycles per UART bit; None (only) with ``byte_link``.
    byte_timeout : int
        ``host`` cycles a command may wait for its next byte before it is dropped; with a UART
        at least two byte times (``20 * uart_divisor``).
    turnaround_timeout : int
        ``host`` cycles the first data byte after a go-ahead may take (VIT_PROTOCOL.md).
    byte_link : bool
        No UART: the bridge's byte streams are the ports ``rx`` and ``tx`` (one byte per
        handshake; for fast simulation). Same bridge, same protocol.
    image_fifo_images : int
        Whole images the pixel FIFO holds (a power of two).

    Clock domains: ``sync`` runs the core; ``host`` the link and the bridge. Load beats and
    pixels cross in ``AsyncFIFO``s (host to sync), results in one (sync to host). COUNTERS
    crosses as a request/acknowledge handshake: the request toggle makes the core's domain
    copy its four counters into a register and toggle the acknowledge; the host side reads
    that register only after the acknowledge has passed its synchronizer, and it does not
    change until the next request.

    Members
    -------
    uart_rx : ``In(1, init=1)``, uart_tx : ``Out(1, init=1)``
        Serial lines, host side 8N1 (without ``byte_link``).
    rx : ``In(stream.Signature(8))``, tx : ``Out(stream.Signature(8))``
        Command and reply bytes (with ``byte_link``).
    busy : ``Out(1)``
        An engine runs a program (``sync`` domain).
    error : ``Out(1)``
        Sticky until reset (``host`` domain): a command was cut off by the timeout, or the UART
        saw a framing error or an overrun.
    """

    def __init__(self, design, *, uart_divisor=None, byte_timeout=DEFAULT_BYTE_TIMEOUT,
                 turnaround_timeout=DEFAULT_TURNAROUND_TIMEOUT, byte_link=False,
                 image_fifo_images=DEFAULT_IMAGE_FIFO_IMAGES):
        try:
            self._byte_link = bool(byte_link)
            if uart_divisor is None:
                if not self._byte_link:
                    raise UserError("uart_divisor is needed unless byte_link is set")
                self._uart_divisor = None
            else:
                self._uart_divisor = operator.index(uart_divisor)
                if not self._byte_link and byte_timeout < 20 * self._uart_divisor:
                    raise UserError(
                        f"byte_timeout {byte_timeout} is under two byte times "
                        f"({20 * self._uart_divisor} host cycles at divisor "
                        f"{self._uart_divisor})")
            # Build the parts now so that bad parameters fail here, not at elaboration.
            self._core = ViTCore(design)
            self._bridge = ViTHostBridge(design, image_fifo_images=image_fifo_images,
                                         byte_timeout=byte_timeout,
                                         turnaround_timeout=turnaround_timeout)
            if not self._byte_link:
                self._receiver = UARTReceiver(self._uart_divisor)
                self._transmitter = UARTTransmitter(self._uart_divisor)
        except Exception:
            self._MustUse__silence = True
            for part in ("_core", "_bridge", "_receiver", "_transmitter"):
                if hasattr(self, part):
                    getattr(self, part)._MustUse__silence = True
            raise
        if self._byte_link:
            ports = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))}
        else:
            ports = {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1)}
        super().__init__({**ports, "busy": Out(1), "error": Out(1)})

    @property
    def design(self):
        return self._core.design

    @property
    def bridge(self):
        return self._bridge

    @property
    def byte_link(self):
        return self._byte_link

    @property
    def uart_divisor(self):
        return self._uart_divisor

    def elaborate(self, platform):
        m = Module()
        to_host = DomainRenamer({"sync": "host"})
        m.submodules.core = core = self._core
        m.submodules.bridge = to_host(self._bridge)
        bridge = self._bridge

        error = Signal()
        with m.If(bridge.dropped):
            m.d.host += error.eq(1)
        if self._byte_link:
            wiring.connect(m, wiring.flipped(self.rx), bridge.rx)
            wiring.connect(m, bridge.tx, wiring.flipped(self.tx))
            m.d.comb += self.error.eq(error)
        else:
            m.submodules.uart_rx = to_host(self._receiver)
            m.submodules.uart_tx = to_host(self._transmitter)
            receiver, transmitter = self._receiver, self._transmitter
            m.d.comb += [receiver.rx.eq(self.uart_rx), self.uart_tx.eq(transmitter.tx),
                         self.error.eq(error | receiver.overrun | receiver.framing_error)]
            wiring.connect(m, receiver.o, bridge.rx)
            wiring.connect(m, bridge.tx, transmitter.i)

        # host -> sync: load beats (the {engine, beat} payload as plain bits) and pixels.
        m.submodules.load_fifo = load_fifo = fifo.AsyncFIFO(
            width=bridge.beat_bits, depth=LOAD_FIFO_DEPTH, w_domain="host", r_domain="sync")
        m.d.comb += [
            load_fifo.w_data.eq(bridge.load.payload),
            load_fifo.w_en.eq(bridge.load.valid),
            bridge.load.ready.eq(load_fifo.w_rdy),
            bridge.load_pending.eq(load_fifo.w_level != 0),
        ]
        # Each AsyncFIFO meets the core through a registered stage: its read pointer, its
        # distributed-RAM read and the beat's engine decode were one path (routed 67 MHz).
        _registered_stage(m, "load_stage", bridge.beat_bits,
                          r_data=load_fifo.r_data, r_rdy=load_fifo.r_rdy, r_en=load_fifo.r_en,
                          paced=True,
                          w_data=core.load.payload, w_en=core.load.valid, w_rdy=core.load.ready)
        pixel_depth = IMAGE_BYTES * bridge.image_fifo_images
        m.submodules.pixel_fifo = pixel_fifo = fifo.AsyncFIFO(
            width=8, depth=pixel_depth, w_domain="host", r_domain="sync", exact_depth=True)
        m.d.comb += [
            pixel_fifo.w_data.eq(bridge.pixels.payload),
            pixel_fifo.w_en.eq(bridge.pixels.valid),
            bridge.pixels.ready.eq(pixel_fifo.w_rdy),
            # w_level lags reads (never writes): room it shows is there.
            bridge.image_room.eq(pixel_fifo.w_level <= pixel_depth - IMAGE_BYTES),
        ]
        _registered_stage(m, "pixel_stage", 8,
                          r_data=pixel_fifo.r_data, r_rdy=pixel_fifo.r_rdy, r_en=pixel_fifo.r_en,
                          paced=True,
                          w_data=core.image.payload, w_en=core.image.valid,
                          w_rdy=core.image.ready)
        # sync -> host: results.
        result_depth = 1 << max(1, (self.design.images_in_flight - 1).bit_length())
        m.submodules.result_fifo = result_fifo = fifo.AsyncFIFO(
            width=len(bridge.result.payload), depth=result_depth, w_domain="sync",
            r_domain="host")
        _registered_stage(m, "result_stage", len(bridge.result.payload),
                          r_data=core.result.payload, r_rdy=core.result.valid,
                          r_en=core.result.ready, w_data=result_fifo.w_data,
                          w_en=result_fifo.w_en, w_rdy=result_fifo.w_rdy)
        m.d.comb += [
            bridge.result.payload.eq(result_fifo.r_data),
            bridge.result.valid.eq(result_fifo.r_rdy),
            result_fifo.r_en.eq(bridge.result.ready),
        ]

        # COUNTERS: request toggle host -> sync; the core's side snapshots and toggles the
        # acknowledge; the snapshot is stable from before the acknowledge crosses until the
        # next request.
        request = Signal()
        with m.If(bridge.snapshot):
            m.d.host += request.eq(~request)
        request_sync = Signal()
        request_seen = Signal()
        m.submodules.request_sync = FFSynchronizer(request, request_sync, o_domain="sync")
        m.d.sync += request_seen.eq(request_sync)
        snapshot = Signal(128)
        acknowledge = Signal()
        with m.If(request_sync != request_seen):
            m.d.sync += [snapshot.eq(Cat(core.nsa_cycles, core.nmp_cycles,
                                         core.nsa_op_cycles, core.nmp_op_cycles)),
                         acknowledge.eq(~acknowledge)]
        acknowledge_host = Signal()
        acknowledge_seen = Signal()
        m.submodules.acknowledge_sync = FFSynchronizer(acknowledge, acknowledge_host,
                                                       o_domain="host")
        m.d.host += acknowledge_seen.eq(acknowledge_host)
        m.d.comb += [
            bridge.snapshot_done.eq(acknowledge_host != acknowledge_seen),
            bridge.counters.eq(snapshot),
            self.busy.eq(core.nsa_busy | core.nmp_busy),
        ]
        return m


def _registered_stage(m, name, width, *, r_data, r_rdy, r_en, w_data, w_en, w_rdy,
                      paced=False):
    """Joins a producer's FIFO-style read side (``r_*``) to a consumer's write side (``w_*``)
    through a two-entry ``SyncFIFOBuffered``, so that neither side's handshake reaches the
    other in one cycle.

    ``paced``: the producer is an ``AsyncFIFO``'s read side, whose ``r_en`` feeds its read
    pointer's increment and its memory address in the same cycle; it is then driven from a
    register (a read at most every other cycle, far above the serial link's rate), which
    takes the pointer comparison behind ``r_rdy`` out of that path (routed 69.8 MHz at a
    100 MHz target with router2). Safe because ``r_rdy`` falls only on a read and the
    stage's room shrinks only on a write, and neither happens in the cycle the read is
    decided."""
    stage = fifo.SyncFIFOBuffered(width=width, depth=2)
    m.submodules[name] = stage
    if paced:
        read = Signal(name=f"{name}_read")
        m.d.sync += read.eq(r_rdy & stage.w_rdy & ~read)
        m.d.comb += [stage.w_data.eq(r_data), stage.w_en.eq(read), r_en.eq(read)]
    else:
        m.d.comb += [stage.w_data.eq(r_data), stage.w_en.eq(r_rdy), r_en.eq(stage.w_rdy)]
    m.d.comb += [w_data.eq(stage.r_data), w_en.eq(stage.r_rdy), stage.r_en.eq(w_rdy)]
