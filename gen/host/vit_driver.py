"""The driver of the ViT host protocol (``gen/host/VIT_PROTOCOL.md``), over any byte transport.

Like :class:`gen.host.driver.Driver` it is ``async``: the same code runs in a cocotb simulation
(:class:`~gen.host.transports.CocotbUartTransport`,
:class:`~gen.host.transports.CocotbByteTransport`) and against a board
(:class:`~gen.host.transports.SerialTransport`, under :func:`asyncio.run`).
"""

import struct
from dataclasses import dataclass

from ..errors import UserError
from ..hw.vit.bridge import (COUNTERS_BYTES, INFO_BYTES, INFO_FORMAT, MAGIC,
                             PROTOCOL_VERSION, REPLY_ERROR, REPLY_OK, Command, design_digest,
                             load_beat_bytes)
from .driver import DeviceError, ProtocolError

__all__ = ["ViTInfo", "ViTCounters", "ViTDriver", "DesignMismatch", "ProtocolError",
           "DeviceError", "load_beats", "beat_bytes"]


class DesignMismatch(UserError):
    """A model image made for another design than the device's."""


@dataclass(frozen=True)
class ViTInfo:
    version: int
    tokens: int
    dim: int
    heads: int
    ffn: int
    layers: int
    classes: int
    lanes: int
    nmp_lanes: int
    images_in_flight: int
    image_fifo_images: int
    load_beat_bytes: int
    digest: int

    @property
    def queue_limit(self):
        """Images worth keeping outstanding: the core's in flight plus the FIFO's."""
        return self.images_in_flight + self.image_fifo_images


@dataclass(frozen=True)
class ViTCounters:
    nsa_cycles: int
    nmp_cycles: int
    nsa_op_cycles: int
    nmp_op_cycles: int
    results: int            # results RESULT has delivered since reset


def load_beats(model_image):
    """The load beats (``engine | beat << 1``) of a :class:`~gen.hw.vit.layout.ModelImage`,
    the NSA engine's first."""
    design = model_image.design
    beats = []
    for engine, (part, image) in enumerate((("nsa", model_image.nsa),
                                            ("nmp", model_image.nmp))):
        layout = design.engine_shape(part).load_layout
        a_off, d_off = layout["addr"].offset, layout["data"].offset
        for target, addr, value in image.loads:
            beats.append(engine | (target | addr << a_off | value << d_off) << 1)
    return beats


def beat_bytes(design):
    """Bytes of one load beat on the wire."""
    return load_beat_bytes(design)


class ViTDriver:
    """Speaks the ViT host protocol over ``transport`` (``async write(bytes)``,
    ``async read(n)``).

    Parameters
    ----------
    transport
        A byte transport (:mod:`gen.host.transports`).
    max_chunk : int
        Most load beats one LOAD command carries.
    poll_interval : callable or None
        ``await poll_interval()`` between RESULT polls that found nothing (a simulator
        timer, or ``lambda: asyncio.sleep(0.001)`` on a board).
    timeout_polls : int
        Polls in a row that find nothing to do before `infer` gives up.
    """

    def __init__(self, transport, *, max_chunk=1024, poll_interval=None, timeout_polls=100_000):
        if max_chunk < 1:
            raise ValueError(f"max_chunk must be at least 1, not {max_chunk}")
        self._transport = transport
        self._max_chunk = max_chunk
        self._poll_interval = poll_interval
        self._timeout_polls = timeout_polls
        self._info = None

    async def _status(self, what):
        """The status byte of a reply: True for K, False for E."""
        reply = await self._transport.read(1)
        if reply == bytes([REPLY_OK]):
            return True
        if reply == bytes([REPLY_ERROR]):
            return False
        raise ProtocolError(f"{what}: expected K or E, got {reply!r}")

    async def _expect_ok(self, what, why=""):
        if not await self._status(what):
            raise DeviceError(f"device refused {what}{why}")

    async def info(self):
        await self._transport.write(bytes([Command.INFO]))
        await self._expect_ok("INFO")
        raw = await self._transport.read(INFO_BYTES)
        fields = struct.unpack(INFO_FORMAT, raw)
        if fields[0] != MAGIC:
            raise ProtocolError(f"INFO: magic {fields[0]!r}, not {MAGIC!r}: is this the ViT "
                                f"accelerator (a GEMM bitstream answers b'GEMM')?")
        info = ViTInfo(*fields[1:])
        if info.version != PROTOCOL_VERSION:
            raise ProtocolError(f"the device speaks ViT protocol version {info.version}, this "
                                f"driver {PROTOCOL_VERSION}: use the driver of the generator "
                                f"that built the bitstream")
        self._info = info
        return info

    async def _device(self):
        return self._info or await self.info()

    def check_design(self, info, design):
        """Refuse (`DesignMismatch`) a design other than the device's."""
        digest = design_digest(design)
        if digest != info.digest:
            raise DesignMismatch(
                f"the model image was made for design digest {digest:#010x}, the device's is "
                f"{info.digest:#010x} (D {info.dim}, FFN {info.ffn}, {info.layers} layers, "
                f"{info.classes} classes, {info.lanes} lanes): prepare the model for this "
                f"device's design, or load the bitstream generated with the model")

    async def load_raw(self, beats):
        """One LOAD command of ``beats`` (ints); `DeviceError` if refused."""
        info = await self._device()
        size = info.load_beat_bytes
        payload = b"".join(int(b).to_bytes(size, "little") for b in beats)
        await self._transport.write(struct.pack("<BI", Command.LOAD, len(beats)))
        await self._expect_ok(f"LOAD of {len(beats)} beats",
                              " (images in flight: read their results first)")
        if not beats:
            await self._expect_ok("LOAD of 0 beats")
            return
        await self._transport.write(payload)
        await self._expect_ok(f"LOAD of {len(beats)} beats",
                              " after the beats (the core did not take them: its clock?)")

    async def load(self, model_image, progress=None):
        """Load a :class:`~gen.hw.vit.layout.ModelImage` in LOAD commands of at most
        ``max_chunk`` beats; ``progress(beats_sent, beats_total)`` after each."""
        info = await self._device()
        self.check_design(info, model_image.design)
        beats = load_beats(model_image)
        for offset in range(0, len(beats), self._max_chunk):
            chunk = beats[offset:offset + self._max_chunk]
            await self.load_raw(chunk)
            if progress is not None:
                progress(offset + len(chunk), len(beats))
        return len(beats)

    async def image(self, pixels):
        """One IMAGE: True if queued, False if the device had no room (or no model)."""
        from ..hw.vit.layout import image_beats
        data = bytes(image_beats(pixels))
        await self._transport.write(bytes([Command.IMAGE]))
        if not await self._status("IMAGE"):
            return False
        await self._transport.write(data)
        await self._expect_ok("IMAGE after its pixels")
        return True

    async def result(self):
        """One RESULT: ``(cls, logits)`` (logits a list of ints), or None if none waits."""
        info = await self._device()
        await self._transport.write(bytes([Command.RESULT]))
        if not await self._status("RESULT"):
            return None
        raw = await self._transport.read(1 + info.classes)
        return raw[0], [v - 256 if v > 127 else v for v in raw[1:]]

    async def counters(self):
        await self._transport.write(bytes([Command.COUNTERS]))
        await self._expect_ok("COUNTERS", " (the core's clock does not run?)")
        return ViTCounters(*struct.unpack("<5I", await self._transport.read(COUNTERS_BYTES)))

    async def infer(self, pixels_list, progress=None):
        """Classify ``pixels_list`` (8x8 integer images, 0..16): a list of ``(cls, logits)``
        in order. Keeps up to ``images_in_flight + FIFO images`` queued: IMAGE until the
        device refuses, then RESULT until none waits. ``progress(done, total)`` after each
        result."""
        from ..hw.vit.layout import image_beats
        images = list(pixels_list)
        for index, pixels in enumerate(images):       # refuse bad input before sending any
            try:
                image_beats(pixels)
            except UserError as exc:
                raise UserError(f"image {index}: {exc}") from None
        info = await self._device()
        limit = max(1, info.queue_limit)
        results, sent, idle = [], 0, 0
        while len(results) < len(images):
            moved = False
            while sent < len(images) and sent - len(results) < limit:
                if not await self.image(images[sent]):
                    if sent == len(results):
                        raise DeviceError("device refused IMAGE with no image of ours "
                                          "outstanding: no model loaded (LOAD first), or "
                                          "another host's images fill the queue")
                    break
                sent, moved = sent + 1, True
            while len(results) < sent:
                got = await self.result()
                if got is None:
                    break
                results.append(got)
                moved = True
                if progress is not None:
                    progress(len(results), len(images))
            if moved:
                idle = 0
                continue
            idle += 1
            if idle > self._timeout_polls:
                raise DeviceError(f"no result after {self._timeout_polls} polls "
                                  f"({len(results)} of {len(images)} done, "
                                  f"{sent - len(results)} outstanding)")
            if self._poll_interval is not None:
                await self._poll_interval()
        return results

