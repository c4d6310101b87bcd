"""Transactors for `amaranth.lib.stream` ports under cocotb 2.1: source, sink, protocol monitor.

A stream port ``o`` of an Amaranth component appears in the Verilog as ``o__payload``,
``o__valid`` and ``o__ready``; `StreamBus` finds those handles (a design may also carry the
payload as separate ports, ``fields``, and a valid-only pipe has no ``ready``). The rule every
transactor holds and `StreamMonitor` checks: a beat transfers at a rising edge where ``valid``
and ``ready`` are both 1; once ``valid`` is 1 it stays 1 with the payload unchanged until the
beat transfers; ``valid`` never waits for ``ready``.

All transactors drive right after a rising edge and sample in that edge's read-only phase, so
what they sample is the state of the cycle that ends at the next edge. Randomness comes from a
`random.Random` the caller passes (derive it with `verif.seeds.rng`), so a run is repeated by
its ``ACCELGEN_SEED``. Every wait is bounded (``timeout_cycles``) and fails the test with a
message that names the stream, what was outstanding and the seed: no test can hang.

The structure follows cocotbext-axi: a testbench class holds one source per input stream and
one sink (plus a monitor) per output stream, each running as its own task::

    tb.source = StreamSource(StreamBus(dut, "i"), dut.clk, gap_probability=0.3, rng=rng)
    tb.sink = StreamSink(StreamBus(dut, "o"), dut.clk, ready_probability=0.6, rng=rng)
    StreamMonitor(StreamBus(dut, "o"), dut.clk)
    await tb.source.send(beats)
    got = await tb.sink.recv(len(beats))
    await tb.sink.expect_quiet(32)
"""

from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from . import seeds

__all__ = ["StreamBus", "StreamSource", "StreamSink", "StreamMonitor", "StreamError",
           "DEFAULT_TIMEOUT_CYCLES", "start_clock", "reset", "wait_until", "log_seed"]

#: Default bound of every wait, in clock cycles.
DEFAULT_TIMEOUT_CYCLES = 200_000


class StreamError(AssertionError):
    """A stream rule broken, or a wait that ran past its bound."""


def _fail(message):
    raise StreamError(f"{message} [{seeds.describe()}, t={get_sim_time('ns')} ns]")


def log_seed(dut):
    """Log the session seed at the start of a test (failures name it too)."""
    dut._log.info("random stimuli from %s (set it to repeat or vary this run)", seeds.describe())
    return seeds.seed()


def start_clock(signal, period_ns):
    """Start a free-running clock on ``signal``; returns its task."""
    return cocotb.start_soon(Clock(signal, period_ns, unit="ns").start())


async def reset(clock, rst, cycles=3):
    """Hold ``rst`` high for ``cycles`` rising edges of ``clock``, then release it."""
    rst.value = 1
    for _ in range(cycles):
        await RisingEdge(clock)
    rst.value = 0


async def power_on_system(dut, clock_ns, host_clock_ns):
    """Start a host system's two clocks, idle its serial input, and reset both domains."""
    await power_on(dut, clock_ns, host_clock_ns, uart_rx=1)


async def power_on(dut, clock_ns, host_clock_ns, **idle):
    """Start ``clk`` and ``host_clk``, drive the ``idle`` input values, reset both domains."""
    log_seed(dut)
    start_clock(dut.clk, clock_ns)
    start_clock(dut.host_clk, host_clock_ns)
    for name, value in idle.items():
        getattr(dut, name).value = value
    dut.rst.value = 1
    dut.host_rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.host_clk)
    dut.rst.value = 0
    dut.host_rst.value = 0
    await RisingEdge(dut.host_clk)


async def wait_until(clock, condition, *, timeout_cycles=DEFAULT_TIMEOUT_CYCLES, what="condition"):
    """Wait, edge by edge (sampling in the read-only phase), until ``condition()`` is true.

    Returns the number of rising edges waited. Fails the test after ``timeout_cycles`` edges.
    Returns in the read-only phase: await a `RisingEdge` before driving anything.
    """
    for cycle in range(1, timeout_cycles + 1):
        await RisingEdge(clock)
        await ReadOnly()
        if condition():
            return cycle
    _fail(f"{what}: not reached within {timeout_cycles} cycles")


def _mask(handle):
    return (1 << len(handle)) - 1


class StreamBus:
    """Signal handles of one stream port of ``dut``.

    ``name``: the port, e.g. ``"o"`` for ``o__valid``, ``o__ready``, ``o__payload``.
    ``valid``/``ready``/``payload``: other signal names than those (``ready=False``: the
    stream has no ready, every valid beat is taken). ``fields``: ``{field: signal name}`` for a
    payload carried on separate ports; beats are then dicts of field values.
    """

    def __init__(self, dut, name=None, *, valid=None, ready=None, payload=None, fields=None):
        if name is None and valid is None:
            raise ValueError("StreamBus: give the port name or the valid signal")
        self.name = name or valid
        self.valid = getattr(dut, valid or f"{name}__valid")
        if ready is False:
            self.ready = None
        elif ready is not None:
            self.ready = getattr(dut, ready)
        else:
            self.ready = getattr(dut, f"{name}__ready", None) if name else None
        if fields is not None:
            if payload is not None:
                raise ValueError("StreamBus: give payload or fields, not both")
            self.fields = {field: getattr(dut, signal) for field, signal in fields.items()}
            self.payload = None
        else:
            self.fields = None
            self.payload = (getattr(dut, payload) if payload is not None else
                            getattr(dut, f"{name}__payload", None) if name else None)

    def drive(self, beat):
        """Put ``beat`` (an int, or a dict with ``fields``) on the payload; values are masked
        to the port widths, so negative numbers drive their two's complement."""
        if self.fields is not None:
            unknown = set(beat) - set(self.fields)
            if unknown:
                raise ValueError(f"{self.name}: no field {sorted(unknown)}")
            for field, value in beat.items():
                handle = self.fields[field]
                handle.value = int(value) & _mask(handle)
        elif self.payload is not None:
            self.payload.value = int(beat) & _mask(self.payload)

    def sample(self):
        """The payload now (unsigned ints): an int, a dict with ``fields``, or None."""
        if self.fields is not None:
            return {field: int(handle.value) for field, handle in self.fields.items()}
        return None if self.payload is None else int(self.payload.value)

    def random_beat(self, rng):
        """Random bits on every payload port (what an idle source drives as garbage)."""
        if self.fields is not None:
            return {field: rng.getrandbits(len(h)) for field, h in self.fields.items()}
        return None if self.payload is None else rng.getrandbits(len(self.payload))


class StreamSource:
    """Sends beats on ``bus`` (a DUT input stream) with random gaps.

    ``gap_probability``: before each beat, every cycle stays idle with this probability (so
    gaps are geometric); 0 sends back to back. ``rng``: a `random.Random` (default: from the
    session seed and the stream name). ``idle``: what the payload shows while ``valid`` is
    0: ``"hold"`` (the last beat), ``"zero"`` or ``"random"`` (garbage the DUT must ignore).
    ``timeout_cycles``: the bound of `send` and `wait_idle`. ``on_accept(beat, time_ns)`` is
    called for every transferred beat with the start time of the cycle it transferred in;
    ``accepted_times`` lists those times.
    """

    def __init__(self, bus, clock, *, gap_probability=0.0, rng=None, idle="hold",
                 timeout_cycles=DEFAULT_TIMEOUT_CYCLES, on_accept=None):
        if idle not in ("hold", "zero", "random"):
            raise ValueError(f"idle={idle!r}: 'hold', 'zero' or 'random'")
        self.bus, self.clock = bus, clock
        self.gap_probability = gap_probability
        self.rng = rng if rng is not None else seeds.rng(f"source {bus.name}")
        self.idle = idle
        self.timeout_cycles = timeout_cycles
        self.on_accept = on_accept
        self.queue = deque()
        self.accepted_times = []
        self.sent = 0
        self._offering = None
        self._has_offer = False
        bus.valid.value = 0
        if idle == "zero":
            bus.drive(self._zero())
        self._task = cocotb.start_soon(self._run())

    def _zero(self):
        return {f: 0 for f in self.bus.fields} if self.bus.fields is not None else 0

    def send_nowait(self, beats):
        """Queue ``beats`` (an iterable of ints, or dicts with fields) and return at once."""
        self.queue.extend(beats)

    async def send(self, beats, *, timeout_cycles=None):
        """Queue ``beats`` and wait until every queued beat has transferred (bounded)."""
        self.send_nowait(beats)
        await self.wait_idle(timeout_cycles=timeout_cycles)

    def idle_now(self):
        return not self.queue and not self._has_offer

    async def wait_idle(self, *, timeout_cycles=None):
        """Wait until the queue is empty and the last beat has transferred (bounded)."""
        bound = self.timeout_cycles if timeout_cycles is None else timeout_cycles
        for _ in range(bound):
            if self.idle_now():
                return
            await RisingEdge(self.clock)
        if not self.idle_now():
            _fail(f"{self.bus.name}: the DUT took {self.sent} beats; "
                  f"{len(self.queue) + self._has_offer} still not taken after {bound} cycles")

    def clear(self):
        """Drop the queued beats and any beat on offer (e.g. across a reset)."""
        self.queue.clear()
        self._has_offer, self._offering = False, None
        self.bus.valid.value = 0

    def stop(self):
        """End this source's task (another source may then drive the bus)."""
        self._task.cancel()

    async def _run(self):
        bus = self.bus
        taken, taken_at = False, 0
        while True:
            await RisingEdge(self.clock)
            if taken and self._has_offer:           # transferred at this edge
                beat = self._offering
                self._has_offer, self._offering = False, None
                self.sent += 1
                self.accepted_times.append(taken_at)
                if self.on_accept is not None:
                    self.on_accept(beat, taken_at)
            if not self._has_offer and self.queue and (
                    self.gap_probability <= 0 or self.rng.random() >= self.gap_probability):
                self._offering, self._has_offer = self.queue.popleft(), True
                bus.drive(self._offering)
            if self._has_offer:
                bus.valid.value = 1
            else:
                bus.valid.value = 0
                if self.idle == "random":
                    bus.drive(bus.random_beat(self.rng))
            await ReadOnly()
            taken = self._has_offer and (bus.ready is None or bool(int(bus.ready.value)))
            taken_at = get_sim_time("ns")


class StreamSink:
    """Collects beats from ``bus`` (a DUT output stream) under random back-pressure.

    ``ready_probability``: each cycle ``ready`` is 1 with this probability (an attribute: a
    test may change it at any time, e.g. from ``on_beat``). ``rng``: a `random.Random`
    (default: from the session seed and the stream name). ``timeout_cycles``: the bound of
    `recv` and `wait_for`. ``on_beat(beat, time_ns)`` is called for every transferred beat.
    Received beats wait in ``beats`` (a deque) until `recv` takes them; ``received`` counts
    them all.
    """

    def __init__(self, bus, clock, *, ready_probability=1.0, rng=None,
                 timeout_cycles=DEFAULT_TIMEOUT_CYCLES, on_beat=None):
        self.bus, self.clock = bus, clock
        self.ready_probability = ready_probability
        self.rng = rng if rng is not None else seeds.rng(f"sink {bus.name}")
        self.timeout_cycles = timeout_cycles
        self.on_beat = on_beat
        self.beats = deque()
        self.received = 0
        if bus.ready is not None:
            bus.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        bus = self.bus
        while True:
            await RisingEdge(self.clock)
            ready = self.rng.random() < self.ready_probability
            if bus.ready is not None:
                bus.ready.value = int(ready)
            else:
                ready = True
            await ReadOnly()
            if ready and int(bus.valid.value):
                beat = bus.sample()
                self.beats.append(beat)
                self.received += 1
                if self.on_beat is not None:
                    self.on_beat(beat, get_sim_time("ns"))

    def clear(self):
        self.beats.clear()

    def stop(self):
        """End this sink's task (another sink may then drive ``ready``)."""
        self._task.cancel()

    async def wait_for(self, count, *, timeout_cycles=None):
        """Wait until at least ``count`` beats are waiting in ``beats`` (bounded)."""
        bound = self.timeout_cycles if timeout_cycles is None else timeout_cycles
        for _ in range(bound):
            if len(self.beats) >= count:
                return
            await RisingEdge(self.clock)
        if len(self.beats) < count:
            _fail(f"{self.bus.name}: {len(self.beats)} of {count} expected beats arrived "
                  f"within {bound} cycles")

    async def recv(self, count=1, *, timeout_cycles=None):
        """The next ``count`` beats, waiting for them (bounded)."""
        await self.wait_for(count, timeout_cycles=timeout_cycles)
        return [self.beats.popleft() for _ in range(count)]

    async def expect_quiet(self, cycles=32):
        """Nothing beyond what was taken: no beat waiting in ``beats`` and ``valid`` stays 0
        for ``cycles`` cycles (with ``ready`` 1, so a stray beat would show)."""
        if self.beats:
            _fail(f"{self.bus.name}: {len(self.beats)} beats more than expected, first "
                  f"{self.beats[0]!r}")
        saved, self.ready_probability = self.ready_probability, 1.0
        try:
            for cycle in range(cycles):
                await RisingEdge(self.clock)
                await ReadOnly()
                if int(self.bus.valid.value):
                    _fail(f"{self.bus.name}: an extra beat ({self.bus.sample()!r}) after the "
                          f"expected ones, {cycle} cycles into the quiet window")
            await RisingEdge(self.clock)       # leave the read-only phase
        finally:
            self.ready_probability = saved


class StreamMonitor:
    """Checks the stream rules on ``bus`` every cycle and fails the test when one breaks.

    Once ``valid`` is 1 without ``ready``, the next cycle must still have ``valid`` 1 and the
    same payload. Counts ``transfers``, ``stalls`` (valid without ready) and
    ``ready_low`` cycles; `check_valid_independent` uses them to catch a ``valid`` that
    waits for ``ready``.
    """

    def __init__(self, bus, clock, *, name=None):
        self.bus, self.clock = bus, clock
        self.name = name or bus.name
        self.transfers = self.stalls = self.ready_low = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        bus = self.bus
        held = None           # payload of a beat on offer and not taken
        waiting = False
        while True:
            await RisingEdge(self.clock)
            await ReadOnly()
            valid = bool(int(bus.valid.value))
            ready = bus.ready is None or bool(int(bus.ready.value))
            payload = bus.sample()
            if waiting:
                if not valid:
                    _fail(f"{self.name}: valid dropped before ready (beat {held!r} not taken)")
                if payload != held:
                    _fail(f"{self.name}: payload changed from {held!r} to {payload!r} while "
                          f"valid waited for ready")
            self.ready_low += not ready
            if valid and ready:
                self.transfers += 1
            waiting = valid and not ready
            if waiting:
                self.stalls += 1
                held = payload

    def check_valid_independent(self, minimum=8):
        """After a run with back-pressure: ``valid`` was seen 1 while ``ready`` was 0. A
        ``valid`` that waits for ``ready`` never is (given enough transfers and ready-low
        cycles to tell)."""
        if self.transfers >= minimum and self.ready_low >= minimum and self.stalls == 0:
            _fail(f"{self.name}: valid was never 1 while ready was 0 in {self.ready_low} "
                  f"ready-low cycles and {self.transfers} transfers: valid waits for ready")

    def stop(self):
        self._task.cancel()
