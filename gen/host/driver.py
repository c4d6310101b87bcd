"""One driver for the host protocol (``gen/host/PROTOCOL.md``), over any byte transport.

The driver is ``async`` so the same code runs inside a cocotb simulation (its transport awaits
simulator time) and against a real board (its transport calls pyserial and never suspends; run
it with :func:`asyncio.run`).
"""

import struct
from dataclasses import dataclass

import numpy as np

from ..hw.host_bridge import (DATAFLOW_IDS, LEVEL_QUERY, LEVEL_REPLY_BYTES, MAGIC, PARAM_WORD_BYTES,
                              PROTOCOL_VERSION, REPLY_ERROR, REPLY_OK, REPLY_UNKNOWN, Buffer,
                              Command)
from .layout import (GemmShape, batch_out_stride, check_batch_operands, check_gemm_operands,
                     pack_activations, pack_params, pack_weights, words_to_bytes, LayoutError)

__all__ = ["DeviceInfo", "Status", "ClockLevel", "GemmRun", "Driver", "ProtocolError", "DeviceError",
           "gemm_link_bytes", "DEFAULT_MAX_CHUNK"]

#: Largest number of words one WRITE or READ moves (`Driver`'s ``max_chunk``).
DEFAULT_MAX_CHUNK = 4096
#: Bytes of a WRITE or READ header (command, buffer, address u32, count u32), of START.
_TRANSFER_HEADER = struct.calcsize("<BBII")
_START_BYTES = struct.calcsize("<BHHH")
_BATCH_BYTES = struct.calcsize("<BHHHH")


class ProtocolError(RuntimeError):
    """The device answered something the protocol does not allow."""


class DeviceError(RuntimeError):
    """The device refused a command or reported a failed job."""


@dataclass(frozen=True)
class DeviceInfo:
    version: int
    rows: int
    cols: int
    dataflow_id: int
    act_depth: int
    wgt_depth: int
    param_depth: int
    out_depth: int

    @property
    def dataflow(self):
        """The engine's dataflow (``DATAFLOW_IDS``), which sets the activation layout."""
        return DATAFLOW_IDS[self.dataflow_id]

    def word_bytes(self, buffer):
        return {Buffer.ACT: self.rows, Buffer.WGT: self.cols,
                Buffer.PARAM: PARAM_WORD_BYTES, Buffer.OUT: 1}[buffer]

    @property
    def runs_batches(self):
        """Whether BATCH may ask for more than one GEMM (the engine of this dataflow runs
        batches)."""
        from ..hw.accelerator import DATAFLOWS
        return DATAFLOWS[self.dataflow].runs_batches


@dataclass(frozen=True)
class Status:
    busy: bool
    done: bool
    error: bool


@dataclass(frozen=True)
class ClockLevel:
    """LEVEL's answer: the accelerator clock level in use (0 is the design's ``clock_mhz``,
    the power-on level) and how many the design has (``manifest.json``: ``clock.levels``)."""
    active: int
    count: int


@dataclass(frozen=True)
class GemmRun:
    y: np.ndarray          # int8 [M, N], or [B, M, N] for a batch
    cycles: int            # accelerator cycles from start to done, no host transfer


class Driver:
    """Speaks the host protocol over ``transport`` (``async write(bytes)``, ``async read(n)``).

    Parameters
    ----------
    transport
        A byte transport; see :mod:`gen.host.transports`.
    max_chunk : int
        Largest number of words moved by one WRITE or READ command.
    """

    def __init__(self, transport, *, max_chunk=DEFAULT_MAX_CHUNK):
        self._transport = transport
        self._max_chunk = max_chunk
        self._info = None

    async def _expect_ok(self, what):
        reply = await self._transport.read(1)
        if reply == bytes([REPLY_ERROR]):
            raise DeviceError(f"device refused {what}")
        if reply != bytes([REPLY_OK]):
            raise ProtocolError(f"{what}: expected an OK byte, got {reply!r}")

    async def info(self):
        await self._transport.write(bytes([Command.INFO]))
        await self._expect_ok("INFO")
        raw = await self._transport.read(24)
        if raw[:4] != MAGIC:
            raise ProtocolError(f"INFO: bad magic {raw[:4]!r}; is this the accelerator?")
        info = DeviceInfo(raw[4], raw[5], raw[6], raw[7], *struct.unpack("<4I", raw[8:24]))
        if info.dataflow_id >= len(DATAFLOW_IDS):
            raise ProtocolError(f"INFO: unknown dataflow id {info.dataflow_id}; this driver "
                                f"knows {', '.join(DATAFLOW_IDS)}")
        if info.version != PROTOCOL_VERSION:
            raise ProtocolError(f"the device speaks protocol version {info.version}, this "
                                f"driver {PROTOCOL_VERSION}: load a bitstream built by this "
                                f"version of the generator (gen build), or use its driver")
        self._info = info
        return info

    async def _device(self):
        return self._info or await self.info()

    async def write_buffer(self, buffer, addr, words):
        """Write ``words`` (byte strings of the buffer's word size) from word ``addr`` on."""
        info = await self._device()
        size = info.word_bytes(buffer)
        for word in words:
            if len(word) != size:
                raise ValueError(f"buffer {buffer} takes {size}-byte words, not {len(word)}")
        for offset in range(0, len(words), self._max_chunk):
            chunk = words[offset:offset + self._max_chunk]
            await self._transport.write(
                struct.pack("<BBII", Command.WRITE, buffer, addr + offset, len(chunk)) +
                words_to_bytes(chunk))
            await self._expect_ok(f"WRITE of {len(chunk)} words to buffer {buffer}")

    async def read_output(self, addr, count):
        """Read ``count`` bytes of the output buffer from ``addr`` on."""
        out = bytearray()
        for offset in range(0, count, self._max_chunk):
            n = min(self._max_chunk, count - offset)
            await self._transport.write(
                struct.pack("<BBII", Command.READ, Buffer.OUT, addr + offset, n))
            await self._expect_ok(f"READ of {n} output bytes")
            out += await self._transport.read(n)
        return bytes(out)

    async def start(self, m, k, n, batch=None):
        """Start an ``m x k x n`` job (START), or a batch of ``batch`` of them (BATCH); the
        device refuses it (`DeviceError`) while a job runs, for a zero size, for sizes beyond
        its buffers, or for a batch its engine does not run (PROTOCOL.md, START and BATCH)."""
        if batch is None:
            await self._transport.write(struct.pack("<BHHH", Command.START, m, k, n))
            what = f"START {m}x{k}x{n}"
        else:
            await self._transport.write(struct.pack("<BHHHH", Command.BATCH, m, k, n, batch))
            what = f"BATCH of {batch} {m}x{k}x{n}"
        await self._expect_ok(f"{what} (a job still running, a zero size, or sizes beyond the "
                              f"device's buffers?)")

    async def abort(self):
        """Stop the running job (if any) and return the `Status` after it: a job stopped by
        the abort shows ``done`` and ``error``; its outputs are not valid."""
        await self._transport.write(bytes([Command.ABORT]))
        await self._expect_ok("ABORT")
        return await self.status()

    async def status(self):
        await self._transport.write(bytes([Command.STATUS]))
        await self._expect_ok("STATUS")
        bits = (await self._transport.read(1))[0]
        # Bits 3..7 are reserved (read 0 in versions 2 and 3) and ignored here.
        return Status(busy=bool(bits & 1), done=bool(bits & 2), error=bool(bits & 4))

    async def level(self, level=None):
        """Select accelerator clock level ``level`` (None: change nothing) and return the
        `ClockLevel` after it. Allowed while a job runs: the switch loses no data. The device
        refuses a level it does not have (`DeviceError`); a design built without clock levels
        does not know the command (`DeviceError` too, saying so)."""
        if level is None:
            level = LEVEL_QUERY
        elif isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < 32:
            # Below every command byte: a design without LEVEL answers both bytes with `?`.
            raise ValueError(f"level must be an int from 0 to 31, not {level!r}")
        await self._transport.write(bytes([Command.LEVEL, level]))
        reply = await self._transport.read(1)
        if reply == bytes([REPLY_UNKNOWN]):
            # The argument byte that followed was taken as a command: resynchronise on it.
            await self._transport.read(1)
            raise DeviceError("the device has no clock levels (a design generated without "
                              "clock_levels_mhz)")
        if reply == bytes([REPLY_ERROR]):
            raise DeviceError(f"device refused clock level {level} (no such level)")
        if reply != bytes([REPLY_OK]):
            raise ProtocolError(f"LEVEL: expected an OK byte, got {reply!r}")
        active, count = await self._transport.read(LEVEL_REPLY_BYTES)
        return ClockLevel(active=active, count=count)

    async def cycles(self):
        await self._transport.write(bytes([Command.CYCLES]))
        await self._expect_ok("CYCLES")
        return struct.unpack("<I", await self._transport.read(4))[0]

    async def gemm(self, a, w, bias, mult, shift, *, poll_interval=None, timeout_polls=100000):
        """Run ``Y = requant(A @ W + bias)`` on the device and return Y and the cycle count."""
        a, w, bias, mult, shift, shape = check_gemm_operands(a, w, bias, mult, shift)
        info = await self._device()
        return await self._run(shape, pack_activations(a, info.rows, info.dataflow),
                               pack_weights(w, info.cols), pack_params(bias, mult, shift),
                               poll_interval, timeout_polls)

    async def gemm_batch(self, a, w, bias, mult, shift, *, poll_interval=None,
                         timeout_polls=100000):
        """Run ``Y[b] = requant(A[b] @ W[b] + bias)`` for every ``b`` of a batch as one job
        (BATCH): ``A`` [B, M, K], ``W`` [B, K, N], one set of parameters. Returns Y [B, M, N]
        and the job's cycles. Only the first GEMM's pipeline fill and the last one's drain are
        paid, so B small GEMMs take far fewer cycles than B jobs."""
        a, w, bias, mult, shift, shape = check_batch_operands(a, w, bias, mult, shift)
        info = await self._device()
        if shape.batch > 1 and not info.runs_batches:
            raise LayoutError(f"the device's {info.dataflow} engine runs no batches: run the "
                              f"{shape.batch} GEMMs one by one with gemm()")
        self._check_buffers(shape, info)    # before packing what may not fit
        act = [word for x in a for word in pack_activations(x, info.rows, info.dataflow)]
        wgt = [word for x in w for word in pack_weights(x, info.cols)]
        return await self._run(shape, act, wgt, pack_params(bias, mult, shift), poll_interval,
                               timeout_polls, batched=True)

    @staticmethod
    def _check_buffers(shape, info):
        """Raise LayoutError unless the job of ``shape`` fits the device's buffers."""
        needs = {
            "activation buffer": (shape.act_words(info.rows, info.dataflow), info.act_depth),
            "weight buffer": (shape.wgt_words(info.cols), info.wgt_depth),
            "parameter buffer": (-(-shape.n // info.cols) * info.cols, info.param_depth),
            "output buffer": (shape.out_words(info.rows), info.out_depth),
        }
        what = (f"{shape.m}x{shape.k}x{shape.n} GEMM" if shape.batch == 1 else
                f"batch of {shape.batch} {shape.m}x{shape.k}x{shape.n} GEMMs")
        for name, (need, have) in needs.items():
            if need > have:
                raise LayoutError(f"{what} needs {need} words of the {name}, the device has "
                                  f"{have}: split the job or generate larger buffers")

    async def _run(self, shape, act_words, wgt_words, param_words, poll_interval,
                   timeout_polls, batched=False):
        """Load the buffers, run the job of ``shape`` and read its outputs (``batched``: Y
        [B, M, N], else [M, N])."""
        info = await self._device()
        self._check_buffers(shape, info)
        await self.write_buffer(Buffer.ACT, 0, act_words)
        await self.write_buffer(Buffer.WGT, 0, wgt_words)
        await self.write_buffer(Buffer.PARAM, 0, param_words)
        await self.start(shape.m, shape.k, shape.n, shape.batch if shape.batch > 1 else None)
        for _ in range(timeout_polls):
            status = await self.status()
            if status.done and not status.busy:
                break
            if poll_interval:
                await poll_interval()
        else:
            raise DeviceError(f"job did not finish after {timeout_polls} polls")
        if status.error:
            raise DeviceError("device reports an error for the job (aborted, or an address "
                              "overflow)")
        cycles = await self.cycles()
        if not batched:
            raw = await self.read_output(0, shape.m * shape.n)
            y = np.frombuffer(raw, dtype=np.int8).reshape(shape.m, shape.n).copy()
            return GemmRun(y=y, cycles=cycles)
        stride = batch_out_stride(shape.m, shape.n, info.rows)
        y = np.stack([np.frombuffer(await self.read_output(b * stride, shape.m * shape.n),
                                    dtype=np.int8).reshape(shape.m, shape.n)
                      for b in range(shape.batch)])
        return GemmRun(y=y, cycles=cycles)


def gemm_link_bytes(m, k, n, rows, cols, *, dataflow="output_stationary",
                    max_chunk=DEFAULT_MAX_CHUNK, batch=1):
    """Bytes on the serial line, both directions, of one :meth:`Driver.gemm` of ``m x k x n``
    on a ``rows x cols`` array (with ``batch`` above 1: :meth:`Driver.gemm_batch`, which
    reads each GEMM's outputs apart): ``{"a", "b", "params", "c", "commands", "total"}``.

    ``a``, ``b`` and ``params`` are the three WRITEs (words, headers, replies), ``c`` the READ
    of the output (header, reply, ``m*n`` bytes), ``commands`` START, one STATUS and CYCLES.
    The driver sends a command only once the previous reply is in, so the directions do not
    overlap and the bytes add up. Not counted: INFO (once per driver) and the STATUS polls
    while the job runs (they overlap the computation).
    """
    def transfer(words, word_bytes):
        chunks = -(-words // max_chunk)
        return words * word_bytes + chunks * (_TRANSFER_HEADER + 1)

    shape = GemmShape(m, k, n, batch)
    shape_words = (shape.act_words(rows, dataflow), shape.wgt_words(cols))
    moved = {
        "a": transfer(shape_words[0], rows),
        "b": transfer(shape_words[1], cols),
        "params": transfer(n, PARAM_WORD_BYTES),
        "c": batch * transfer(m * n, 1),
        "commands": ((_START_BYTES if batch == 1 else _BATCH_BYTES) + 1) + (1 + 2) + (1 + 5),
    }
    moved["total"] = sum(moved.values())
    return moved
