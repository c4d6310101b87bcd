"""ViT host protocol engine: turns command bytes into load beats, images and replies.

The protocol is specified in ``gen/host/VIT_PROTOCOL.md``; :mod:`gen.host.vit_driver` is its
host side. The framing (status bytes, inter-byte timeout) is that of the GEMM protocol
(``gen/host/PROTOCOL.md``, :mod:`gen.hw.host_bridge`).
"""

import dataclasses
import json
import operator
import struct
import zlib

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ...errors import UserError
from ..host_bridge import DEFAULT_BYTE_TIMEOUT, REPLY_ERROR, REPLY_OK, REPLY_UNKNOWN
from .layout import IMAGE_SIDE, ViTDesign

__all__ = ["ViTHostBridge", "Command", "PROTOCOL_VERSION", "MAGIC", "INFO_FORMAT",
           "INFO_BYTES", "COUNTERS_BYTES", "IMAGE_BYTES", "MAX_PIXEL",
           "DEFAULT_BYTE_TIMEOUT", "DEFAULT_TURNAROUND_TIMEOUT", "DEFAULT_IMAGE_FIFO_IMAGES",
           "CDC_WAIT_LIMIT", "REPLY_OK", "REPLY_ERROR", "REPLY_UNKNOWN",
           "load_beat_bits", "load_beat_bytes", "result_bytes", "design_digest", "info_bytes"]

PROTOCOL_VERSION = 1
MAGIC = b"VITA"
#: INFO's reply after ``K``: magic, version, T (u8), D (u16), H (u8), FFN (u16), layers,
#: classes, NSA lanes, NMP lanes, images in flight, image FIFO images, load-beat bytes (u8
#: each), design digest (u32).
INFO_FORMAT = "<4sBBHBH7BI"
INFO_BYTES = struct.calcsize(INFO_FORMAT)
#: COUNTERS' reply after ``K``: five u32.
COUNTERS_BYTES = 20
IMAGE_BYTES = IMAGE_SIDE * IMAGE_SIDE
MAX_PIXEL = 16
#: Host-clock cycles the first data byte after a go-ahead ``K`` (LOAD's beats, IMAGE's
#: pixels) may take: 250 ms at the 25 MHz oscillator, room for a USB serial adapter's latency
#: timer (16 ms by default) and a busy host.
DEFAULT_TURNAROUND_TIMEOUT = 6_250_000
DEFAULT_IMAGE_FIFO_IMAGES = 4
#: Host-clock cycles LOAD and COUNTERS wait for the core's side before they reply ``E``.
CDC_WAIT_LIMIT = 2 ** 16


class Command:
    INFO = ord("I")
    LOAD = ord("L")
    IMAGE = ord("M")
    RESULT = ord("R")
    COUNTERS = ord("C")


def load_beat_bits(design):
    """Bits of one load beat on the wire: the engine bit and the wider engine's beat."""
    return 1 + max(design.engine_shape(part).load_layout.size for part in ("nsa", "nmp"))


def load_beat_bytes(design):
    """Bytes of one load beat on the wire: ``ceil((1 + W) / 8)``."""
    return -(-load_beat_bits(design) // 8)


def result_bytes(design):
    """Bytes of one result after ``K``: the class and the logits."""
    return 1 + design.classes


def design_digest(design):
    """A 32-bit digest (CRC-32) of everything a model image depends on: every field of the
    design and the load-beat and result widths. INFO reports it; the driver compares it with
    the design a model image was made for."""
    fields = {}
    for f in dataclasses.fields(design):
        value = getattr(design, f.name)
        fields[f.name] = dict(sorted(dict(value).items())) if f.name == "capacity" else value
    text = json.dumps({"design": fields, "load_beat_bits": load_beat_bits(design),
                       "result_bits": 8 * result_bytes(design)}, sort_keys=True)
    return zlib.crc32(text.encode())


def _nmp_lanes(design):
    lanes_of = getattr(design, "lanes_of", None)
    return lanes_of("nmp") if lanes_of is not None else design.lanes


def info_bytes(design, image_fifo_images):
    """The INFO reply payload (after ``K``)."""
    return struct.pack(INFO_FORMAT, MAGIC, PROTOCOL_VERSION, design.tokens, design.dim,
                       design.heads, design.ffn, design.layers, design.classes, design.lanes,
                       _nmp_lanes(design), design.images_in_flight, image_fifo_images,
                       load_beat_bytes(design), design_digest(design))


def _check_int(name, value, low, high=None):
    if isinstance(value, bool):
        raise UserError(f"{name} must be an integer, not {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise UserError(f"{name} must be an integer, not {value!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"{low}..{high}"
        raise UserError(f"{name} must be {bound}, not {value}")
    return value


# Where SEND goes after its last byte.
_AFTER_IDLE, _AFTER_LOAD, _AFTER_IMAGE = range(3)


class ViTHostBridge(wiring.Component):
    """Executes ViT host commands arriving as bytes; replies as bytes (VIT_PROTOCOL.md).

    Parameters
    ----------
    design : ViTDesign
    image_fifo_images : int
        Whole images the pixel FIFO behind ``pixels`` holds (a power of two, 1..128); IMAGE
        is refused unless ``image_room`` says one more fits.
    byte_timeout : int
        Host-clock cycles a command may wait for its next byte before it is dropped.
    turnaround_timeout : int
        Host-clock cycles the first data byte after a go-ahead ``K`` may take (at least
        ``byte_timeout``).

    Members
    -------
    rx : ``In(stream.Signature(8))``, tx : ``Out(stream.Signature(8))``
        Command and reply bytes.
    load : ``Out(stream.Signature(1 + W))``
        Load beats: bit 0 the engine (0 NSA, 1 NMP), bits 1.. that engine's beat; the
        ``{engine, beat}`` payload of :class:`~gen.hw.vit.system.ViTCore` as plain bits.
    load_pending : ``In(1)``
        Beats written to ``load`` are not all taken by the core yet (LOAD replies once they
        are).
    pixels : ``Out(stream.Signature(8))``
        Pixels of accepted images, 64 at a time (a whole image or nothing).
    image_room : ``In(1)``
        The pixel FIFO has room for one more whole image.
    result : ``In(stream.Signature(8 * (1 + classes)))``
        Results ``{cls, logits}`` as plain bits; taken by RESULT.
    snapshot : ``Out(1)``, snapshot_done : ``In(1)``, counters : ``In(128)``
        COUNTERS: a one-cycle request; a one-cycle acknowledge once ``counters`` (the four
        core counters, ``nsa_cycles`` in bits 0..31 to ``nmp_op_cycles``) holds a snapshot
        that stays unchanged until the next request.
    in_flight : ``Out(16)``
        Images accepted by IMAGE whose results RESULT has not delivered.
    dropped : ``Out(1)``
        A one-cycle pulse: a command was cut off by the inter-byte timeout and dropped.
    """

    def __init__(self, design, *, image_fifo_images=DEFAULT_IMAGE_FIFO_IMAGES,
                 byte_timeout=DEFAULT_BYTE_TIMEOUT,
                 turnaround_timeout=DEFAULT_TURNAROUND_TIMEOUT):
        try:
            self._check(design, image_fifo_images, byte_timeout, turnaround_timeout)
        except Exception:
            self._MustUse__silence = True
            raise
        super().__init__({
            "rx":            In(stream.Signature(8)),
            "tx":            Out(stream.Signature(8)),
            "load":          Out(stream.Signature(self._beat_bits)),
            "load_pending":  In(1),
            "pixels":        Out(stream.Signature(8)),
            "image_room":    In(1),
            "result":        In(stream.Signature(8 * self._result_bytes)),
            "snapshot":      Out(1),
            "snapshot_done": In(1),
            "counters":      In(128),
            "in_flight":     Out(16),
            "dropped":       Out(1),
        })

    def _check(self, design, image_fifo_images, byte_timeout, turnaround_timeout):
        if not isinstance(design, ViTDesign):
            raise UserError(f"design must be a ViTDesign, not {design!r}")
        self._design = design
        self._byte_timeout = _check_int("byte_timeout", byte_timeout, 2)
        self._turnaround = _check_int("turnaround_timeout", turnaround_timeout,
                                      self._byte_timeout)
        n = _check_int("image_fifo_images", image_fifo_images, 1, 128)
        if n & (n - 1):
            raise UserError(f"image_fifo_images must be a power of two (the FIFO is an "
                            f"AsyncFIFO), not {n}")
        self._fifo_images = n
        for name, value, high in (("tokens", design.tokens, 255), ("dim", design.dim, 65535),
                                  ("heads", design.heads, 255), ("ffn", design.ffn, 65535),
                                  ("layers", design.layers, 255),
                                  ("classes", design.classes, 255),
                                  ("lanes", design.lanes, 255),
                                  ("NMP lanes", _nmp_lanes(design), 255),
                                  ("images_in_flight", design.images_in_flight, 255)):
            if value > high:
                raise UserError(f"INFO reports the design's {name} in "
                                f"{'two bytes' if high > 255 else 'one byte'}: at most "
                                f"{high}, not {value}")
        self._beat_bits = load_beat_bits(design)
        self._beat_bytes = load_beat_bytes(design)
        if self._beat_bytes > 255:
            raise UserError(f"a load beat of {self._beat_bytes} bytes does not fit INFO's "
                            f"one-byte field")
        self._result_bytes = result_bytes(design)

    @property
    def design(self):
        return self._design

    @property
    def byte_timeout(self):
        return self._byte_timeout

    @property
    def turnaround_timeout(self):
        return self._turnaround

    @property
    def image_fifo_images(self):
        return self._fifo_images

    @property
    def beat_bits(self):
        return self._beat_bits

    @property
    def beat_bytes(self):
        return self._beat_bytes

    def info_bytes(self):
        """The INFO reply payload (after the status byte)."""
        return info_bytes(self._design, self._fifo_images)

    def elaborate(self, platform):
        m = Module()
        beat_bytes, result_len = self._beat_bytes, self._result_bytes

        command = Signal(8)
        args = Signal(32)
        arg_index = Signal(range(4))
        count = Signal(32)
        beat = Signal(8 * beat_bytes)
        byte_index = Signal(range(beat_bytes))
        beat_full = Signal()
        loaded = Signal()             # a LOAD has completed since reset (or a cut-off one)
        delivered = Signal(32)

        m.submodules.pixel_buffer = pixel_buffer = memory.Memory(
            shape=8, depth=IMAGE_BYTES, init=[])
        pix_w = pixel_buffer.write_port()
        pix_r = pixel_buffer.read_port()
        pix_index = Signal(range(IMAGE_BYTES))
        bad_pixel = Signal()

        # Short replies and COUNTERS (K + 20 bytes) shift out of `reply`; INFO reads a
        # constant table; RESULT reads the result FIFO's output byte by byte.
        reply = Signal(8 * (1 + COUNTERS_BYTES))
        reply_left = Signal(range(2 + COUNTERS_BYTES))
        after = Signal(2)
        info_table = Array(Const(b, 8) for b in bytes([REPLY_OK]) + self.info_bytes())
        info_index = Signal(range(len(info_table)))
        result_index = Signal(range(result_len + 1))
        result_view = Cat(Const(REPLY_OK, 8), self.result.payload)
        wait = Signal(range(CDC_WAIT_LIMIT))

        # Inter-byte timeout as in the GEMM bridge: cycles since the command's last byte was
        # taken; the first data byte after a go-ahead (`first`) has the turnaround timeout.
        quiet = Signal(range(self._turnaround))
        first = Signal()
        stalled = Signal()
        m.d.comb += stalled.eq(quiet >= Mux(first, self._turnaround - 1,
                                            self._byte_timeout - 1))
        with m.If(self.rx.valid & self.rx.ready):
            m.d.sync += [quiet.eq(0), first.eq(0)]
        with m.Elif(~stalled):
            m.d.sync += quiet.eq(quiet + 1)

        m.d.sync += [self.snapshot.eq(0), self.dropped.eq(0)]   # one-cycle pulses
        m.d.comb += [
            self.tx.payload.eq(reply[0:8]),
            self.load.payload.eq(beat[:self._beat_bits]),
            pix_w.addr.eq(pix_index),
            pix_w.data.eq(self.rx.payload),
            pix_r.addr.eq(pix_index),
            self.pixels.payload.eq(pix_r.data),
        ]

        def send(value, length, then=_AFTER_IDLE):
            m.d.sync += [reply.eq(value), reply_left.eq(length), after.eq(then)]
            m.next = "SEND"

        def drop():
            m.d.sync += self.dropped.eq(1)
            m.next = "IDLE"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.rx.ready.eq(1)
                m.d.sync += [quiet.eq(0), first.eq(0)]
                with m.If(self.rx.valid):
                    m.d.sync += [command.eq(self.rx.payload), arg_index.eq(0)]
                    with m.Switch(self.rx.payload):
                        with m.Case(Command.LOAD):
                            m.next = "ARGS"
                        with m.Case(Command.INFO, Command.IMAGE, Command.RESULT,
                                    Command.COUNTERS):
                            m.next = "EXEC"
                        with m.Default():
                            send(REPLY_UNKNOWN, 1)

            with m.State("ARGS"):                   # LOAD's count, u32
                m.d.comb += self.rx.ready.eq(1)
                with m.If(self.rx.valid):
                    m.d.sync += [args.word_select(arg_index, 8).eq(self.rx.payload),
                                 arg_index.eq(arg_index + 1)]
                    with m.If(arg_index == 3):
                        m.next = "EXEC"
                with m.Elif(stalled):
                    drop()                          # nothing changed

            with m.State("EXEC"):
                with m.Switch(command):
                    with m.Case(Command.INFO):
                        m.d.sync += info_index.eq(0)
                        m.next = "SEND_INFO"
                    with m.Case(Command.LOAD):
                        with m.If(self.in_flight != 0):
                            send(REPLY_ERROR, 1)
                        with m.Elif(args == 0):
                            send(Cat(Const(REPLY_OK, 8), Const(REPLY_OK, 8)), 2)
                        with m.Else():
                            m.d.sync += [count.eq(args), byte_index.eq(0), beat_full.eq(0),
                                         loaded.eq(0)]
                            send(REPLY_OK, 1, _AFTER_LOAD)
                    with m.Case(Command.IMAGE):
                        with m.If(~loaded | ~self.image_room):
                            send(REPLY_ERROR, 1)
                        with m.Else():
                            m.d.sync += [pix_index.eq(0), bad_pixel.eq(0)]
                            send(REPLY_OK, 1, _AFTER_IMAGE)
                    with m.Case(Command.RESULT):
                        with m.If(self.result.valid):
                            m.d.sync += result_index.eq(0)
                            m.next = "SEND_RESULT"
                        with m.Else():
                            send(REPLY_ERROR, 1)
                    with m.Case(Command.COUNTERS):
                        m.d.sync += [self.snapshot.eq(1), wait.eq(0)]
                        m.next = "SNAP_WAIT"

            with m.State("SEND"):
                m.d.comb += self.tx.valid.eq(1)
                m.d.sync += quiet.eq(0)
                with m.If(self.tx.ready):
                    m.d.sync += [reply.eq(reply >> 8), reply_left.eq(reply_left - 1)]
                    with m.If(reply_left == 1):
                        with m.Switch(after):
                            with m.Case(_AFTER_LOAD):
                                m.d.sync += first.eq(1)
                                m.next = "LDATA"
                            with m.Case(_AFTER_IMAGE):
                                m.d.sync += first.eq(1)
                                m.next = "PDATA"
                            with m.Default():
                                m.next = "IDLE"

            with m.State("SEND_INFO"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(info_table[info_index])]
                m.d.sync += quiet.eq(0)
                with m.If(self.tx.ready):
                    m.d.sync += info_index.eq(info_index + 1)
                    with m.If(info_index == len(info_table) - 1):
                        m.next = "IDLE"

            with m.State("SEND_RESULT"):
                m.d.comb += [self.tx.valid.eq(1),
                             self.tx.payload.eq(result_view.word_select(result_index, 8))]
                m.d.sync += quiet.eq(0)
                with m.If(self.tx.ready):
                    m.d.sync += result_index.eq(result_index + 1)
                    with m.If(result_index == result_len):
                        m.d.comb += self.result.ready.eq(1)
                        m.d.sync += delivered.eq(delivered + 1)
                        with m.If(self.in_flight != 0):
                            m.d.sync += self.in_flight.eq(self.in_flight - 1)
                        m.next = "IDLE"

            with m.State("LDATA"):
                m.d.comb += [self.rx.ready.eq(~beat_full), self.load.valid.eq(beat_full)]
                with m.If(beat_full):
                    with m.If(self.load.ready):
                        m.d.sync += [beat_full.eq(0), count.eq(count - 1)]
                        with m.If(count == 1):
                            m.d.sync += wait.eq(0)
                            m.next = "LDRAIN"
                    with m.Elif(stalled):
                        m.d.sync += beat_full.eq(0)
                        drop()                      # the beats before stay loaded
                with m.Elif(self.rx.valid):
                    m.d.sync += beat.word_select(byte_index, 8).eq(self.rx.payload)
                    with m.If(byte_index == beat_bytes - 1):
                        m.d.sync += [byte_index.eq(0), beat_full.eq(1)]
                    with m.Else():
                        m.d.sync += byte_index.eq(byte_index + 1)
                with m.Elif(stalled):
                    drop()                          # the partial beat is discarded

            with m.State("LDRAIN"):
                # Reply once the core has taken every beat (the FIFO's level lags a write by
                # a cycle, hence the two cycles first); bounded in case its clock stops.
                m.d.sync += wait.eq(wait + 1)
                with m.If((wait >= 2) & ~self.load_pending):
                    m.d.sync += loaded.eq(1)
                    send(REPLY_OK, 1)
                with m.Elif(wait == CDC_WAIT_LIMIT - 1):
                    send(REPLY_ERROR, 1)

            with m.State("PDATA"):
                m.d.comb += [self.rx.ready.eq(1), pix_w.en.eq(self.rx.valid)]
                with m.If(self.rx.valid):
                    m.d.sync += pix_index.eq(pix_index + 1)
                    with m.If(self.rx.payload > MAX_PIXEL):
                        m.d.sync += bad_pixel.eq(1)
                    with m.If(pix_index == IMAGE_BYTES - 1):
                        m.d.sync += pix_index.eq(0)
                        m.next = "PCHECK"
                with m.Elif(stalled):
                    drop()                          # nothing enters the FIFO

            with m.State("PCHECK"):
                with m.If(bad_pixel):
                    send(REPLY_ERROR, 1)            # the image is dropped
                with m.Else():
                    m.next = "PREAD"

            with m.State("PREAD"):                  # the buffer's read takes a cycle
                m.next = "PSEND"

            with m.State("PSEND"):
                m.d.comb += self.pixels.valid.eq(1)
                with m.If(self.pixels.ready):
                    m.d.sync += pix_index.eq(pix_index + 1)
                    with m.If(pix_index == IMAGE_BYTES - 1):
                        m.d.sync += [pix_index.eq(0), self.in_flight.eq(self.in_flight + 1)]
                        send(REPLY_OK, 1)
                    with m.Else():
                        m.next = "PREAD"

            with m.State("SNAP_WAIT"):
                m.d.sync += wait.eq(wait + 1)
                with m.If(self.snapshot_done):
                    send(Cat(Const(REPLY_OK, 8), self.counters, delivered), 1 + COUNTERS_BYTES)
                with m.Elif(wait == CDC_WAIT_LIMIT - 1):
                    send(REPLY_ERROR, 1)
        return m
