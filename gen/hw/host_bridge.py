"""Host protocol engine: turns command bytes into buffer writes, job starts and replies.

The protocol is specified in ``gen/host/PROTOCOL.md``; :mod:`gen.host.driver` is its host side.
"""

import operator

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .gemm import DIM_WIDTH, times_constant
from .requant import RequantParams

__all__ = ["HostBridge", "PROTOCOL_VERSION", "MAGIC", "Command", "Buffer",
           "REPLY_OK", "REPLY_ERROR", "REPLY_UNKNOWN", "PARAM_WORD_BYTES",
           "DEFAULT_BYTE_TIMEOUT", "ABORT_WAIT_LIMIT", "LEVEL_QUERY", "LEVEL_REPLY_BYTES",
           "start_fits", "DATAFLOW_IDS"]

PROTOCOL_VERSION = 3
#: INFO's dataflow id: the position of the engine's dataflow here (the sorted names of
#: ``gen.hw.accelerator.DATAFLOWS``).
DATAFLOW_IDS = ("output_stationary", "weight_stationary")
MAGIC = b"GEMM"
REPLY_OK = ord("K")
REPLY_ERROR = ord("E")
REPLY_UNKNOWN = ord("?")
#: Bytes of a parameter word on the wire: bias (4), multiplier (4), shift (1).
PARAM_WORD_BYTES = 9
#: Host-clock cycles a command may wait for its next byte before it is dropped: 5 ms at the
#: 25 MHz oscillator (500 byte times at 1 Mbaud, 57 at 115200 baud).
DEFAULT_BYTE_TIMEOUT = 125_000
#: Host-clock cycles ABORT waits for the accelerator to stop before it replies anyway.
ABORT_WAIT_LIMIT = 2 ** 16
#: LEVEL's argument that changes nothing and only reports the active level.
LEVEL_QUERY = 0xFF
#: LEVEL's reply after the status byte: the active level and the number of levels.
LEVEL_REPLY_BYTES = 2
#: Host-clock cycles LEVEL waits for the clock select to take the new level (it takes two).
_LEVEL_WAIT_LIMIT = 8


class Command:
    INFO = ord("I")
    WRITE = ord("W")
    READ = ord("R")
    START = ord("S")
    #: START of a batch of GEMMs of one shape (version 3).
    BATCH = ord("B")
    STATUS = ord("P")
    CYCLES = ord("C")
    ABORT = ord("A")
    #: Only in a design with clock levels (PROTOCOL.md, LEVEL); others answer ``?``.
    LEVEL = ord("L")


class Buffer:
    ACT = 0
    WGT = 1
    PARAM = 2
    OUT = 3


#: Argument bytes each command takes.
_ARG_BYTES = {Command.INFO: 0, Command.WRITE: 9, Command.READ: 9, Command.START: 6,
              Command.BATCH: 8, Command.STATUS: 0, Command.CYCLES: 0, Command.ABORT: 0}
_INFO_BYTES = 4 + 4 + 16


def start_fits(m, k, n, *, rows, cols, act_depth, wgt_depth, param_depth, out_depth, batch=1,
               runs_batches=True):
    """Whether START ``m, k, n`` (BATCH ``m, k, n, batch``) passes the device's size check
    (PROTOCOL.md, START and BATCH)."""
    if 0 in (m, k, n, batch) or (batch != 1 and not runs_batches):
        return False
    m_tiles, n_tiles = -(-m // rows), -(-n // cols)
    out_rows = (batch - 1) * m_tiles * rows + m
    return (batch * m_tiles * k <= act_depth and batch * n_tiles * k <= wgt_depth and
            n_tiles * cols <= param_depth and out_rows * n <= out_depth)


def _addr_width(depth):
    return max(1, (depth - 1).bit_length())


class HostBridge(wiring.Component):
    """Executes host commands arriving as bytes; replies as bytes.

    Parameters
    ----------
    rows, cols : int
        PE array size (sets the activation and weight word widths).
    dataflow_id : int
        Reported by INFO.
    act_depth, wgt_depth, param_depth, out_depth : int
        Buffer depths in words; accesses beyond them, and jobs that need more, are refused
        with an error reply.
    byte_timeout : int
        Host-clock cycles a command may wait for its next byte (argument or WRITE data); after
        that the partial command is dropped without a reply (see PROTOCOL.md).
    runs_batches : bool or None
        Whether the engine runs batches (BATCH with more than one GEMM); None: as the engine
        of ``dataflow_id`` does.
    clock_levels : int
        Accelerator clock levels (1, or 2 with a :class:`~gen.hw.clock_select.ClockSelect`).
        With more than one, the LEVEL command exists and ``level`` / ``level_active`` are
        members; with one, the engine is exactly the one without levels.

    Members
    -------
    rx : ``In(stream.Signature(8))``, tx : ``Out(stream.Signature(8))``
        Command and reply bytes.
    act_wr, wgt_wr, param_wr : ``In(memory.WritePort.Signature(...))``
        Drive the buffers' host-side write ports.
    out_rd : ``In(memory.ReadPort.Signature(...))``
        Reads the output buffer.
    start, m_size, k_size, n_size, b_size : ``Out``
        Job control towards the accelerator (``start`` only for sizes that fit the buffers;
        ``b_size`` is 1 after START, the batch after BATCH).
    abort : ``Out(1)``
        A one-cycle pulse: stop the running job.
    busy, done, error, cycles : ``In``
        Job status from the accelerator: ``busy`` a level (a START not yet seen by the
        accelerator counts), ``done`` a one-cycle pulse at a job's end, ``error`` that job's
        outcome (valid from ``done`` on).
    level : ``Out(range(clock_levels))``, level_active : ``In(range(clock_levels))``
        Only with clock levels: the level LEVEL asked for (a register, 0 after reset) and the
        one the clock select applies.
    """

    def __init__(self, *, rows, cols, dataflow_id=0, act_depth, wgt_depth, param_depth,
                 out_depth, byte_timeout=DEFAULT_BYTE_TIMEOUT, clock_levels=1,
                 runs_batches=None):
        self._clock_levels = operator.index(clock_levels)
        if not 1 <= self._clock_levels <= 2:
            raise ValueError(f"clock_levels must be 1 or 2 (one DCSC), not {clock_levels}")
        self._arg_bytes = dict(_ARG_BYTES)
        levels = {}
        if self._clock_levels > 1:
            self._arg_bytes[Command.LEVEL] = 1
            levels = {"level": Out(range(self._clock_levels)),
                      "level_active": In(range(self._clock_levels))}
        self._byte_timeout = operator.index(byte_timeout)
        if self._byte_timeout < 2:
            raise ValueError(f"byte_timeout must be at least 2 cycles, not {byte_timeout}")
        self._rows = operator.index(rows)
        self._cols = operator.index(cols)
        self._dataflow_id = operator.index(dataflow_id)
        if not 0 <= self._dataflow_id < len(DATAFLOW_IDS):
            raise ValueError(f"dataflow_id must be below {len(DATAFLOW_IDS)}, not {dataflow_id}")
        if runs_batches is None:
            from .accelerator import DATAFLOWS
            runs_batches = DATAFLOWS[DATAFLOW_IDS[self._dataflow_id]].runs_batches
        self._runs_batches = bool(runs_batches)
        self._depths = [operator.index(act_depth), operator.index(wgt_depth),
                        operator.index(param_depth), operator.index(out_depth)]
        if max(self._rows, self._cols) > 255:
            raise ValueError("INFO reports rows and columns as one byte each; at most 255")
        super().__init__({
            "rx":       In(stream.Signature(8)),
            "tx":       Out(stream.Signature(8)),
            "act_wr":   In(memory.WritePort.Signature(
                addr_width=_addr_width(act_depth), shape=8 * self._rows)),
            "wgt_wr":   In(memory.WritePort.Signature(
                addr_width=_addr_width(wgt_depth), shape=8 * self._cols)),
            "param_wr": In(memory.WritePort.Signature(
                addr_width=_addr_width(param_depth), shape=RequantParams())),
            "out_rd":   In(memory.ReadPort.Signature(
                addr_width=_addr_width(out_depth), shape=8)),
            "start":    Out(1),
            "m_size":   Out(DIM_WIDTH),
            "k_size":   Out(DIM_WIDTH),
            "n_size":   Out(DIM_WIDTH),
            "b_size":   Out(DIM_WIDTH),
            "abort":    Out(1),
            "busy":     In(1),
            "done":     In(1),
            "error":    In(1),
            "cycles":   In(32),
            **levels,
        })

    @property
    def byte_timeout(self):
        return self._byte_timeout

    @property
    def runs_batches(self):
        return self._runs_batches

    @property
    def clock_levels(self):
        return self._clock_levels

    @property
    def word_bytes(self):
        """Bytes per word of each buffer, indexed by :class:`Buffer`."""
        return [self._rows, self._cols, PARAM_WORD_BYTES, 1]

    def info_bytes(self):
        """The INFO reply payload (after the status byte)."""
        out = bytearray(MAGIC)
        out += bytes([PROTOCOL_VERSION, self._rows, self._cols, self._dataflow_id])
        for depth in self._depths:
            out += depth.to_bytes(4, "little")
        assert len(out) == _INFO_BYTES
        return bytes(out)

    def elaborate(self, platform):
        m = Module()

        command = Signal(8)
        args = Signal(9 * 8)
        arg_index = Signal(range(10))
        arg_count = Signal(range(10))
        buf = args[0:8]
        addr = Signal(32)
        count = Signal(32)

        word_bytes_max = max(self.word_bytes)
        word = Signal(8 * word_bytes_max)
        byte_index = Signal(range(word_bytes_max + 1))
        word_bytes = Signal(range(word_bytes_max + 1))
        m.d.comb += word_bytes.eq(Mux(buf == Buffer.ACT, self._rows,
                                  Mux(buf == Buffer.WGT, self._cols,
                                  Mux(buf == Buffer.PARAM, PARAM_WORD_BYTES, 1))))
        depth = Signal(33)
        m.d.comb += depth.eq(Mux(buf == Buffer.ACT, self._depths[0],
                             Mux(buf == Buffer.WGT, self._depths[1],
                             Mux(buf == Buffer.PARAM, self._depths[2], self._depths[3]))))
        arg_addr = args[8:40]
        arg_count_words = args[40:72]
        # Range checks take two registered steps (CHECK_END, CHECK_RANGE): the link is slow,
        # the clock is not, and a 33-bit add-and-compare in one cycle limited Fmax.
        access_end = Signal(33)
        depth_reg = Signal(33)
        in_range = Signal()

        # Short replies (at most 5 bytes) shift out of `reply`; INFO reads a constant table, so
        # no wide register has to load and shift it.
        reply = Signal(8 * 5)
        reply_left = Signal(range(6))
        info_table = Array(Const(byte, 8) for byte in bytes([REPLY_OK]) + self.info_bytes())
        info_index = Signal(range(len(info_table)))
        then_read = Signal()
        discard = Signal()
        read_byte = Signal(8)

        done_flag = Signal()
        m.d.sync += [self.start.eq(0), self.abort.eq(0)]    # one-cycle pulses, registered
        with m.If(self.done):
            m.d.sync += done_flag.eq(1)

        # Inter-byte timeout: cycles since the command's last byte was taken (saturating; reset
        # in IDLE; the internal steps between bytes count too). A command waiting for its next
        # byte (ARGS, WDATA) is dropped when none has come for `byte_timeout` cycles.
        quiet = Signal(range(self._byte_timeout))
        stalled = Signal()
        m.d.comb += stalled.eq(quiet == self._byte_timeout - 1)
        with m.If(self.rx.valid & self.rx.ready):
            m.d.sync += quiet.eq(0)
        with m.Elif(~stalled):
            m.d.sync += quiet.eq(quiet + 1)

        # START's and BATCH's size check (PROTOCOL.md): m_tiles = ceil(M/rows) and n_tiles =
        # ceil(N/cols) by restoring division (17 steps); for BATCH, (B-1)*m_tiles and
        # (B-1)*n_tiles by shift-and-add (16 steps); the tiles and output rows of the whole
        # batch (1 step); then its act words, wgt words and output bytes by shift-and-add (16
        # steps); then compares with the depths: 37 cycles for START, 53 for BATCH, and no
        # multiplier, against 60 or 80 bits on the line for the command.
        size_m, size_k, size_n = args[0:16], args[16:32], args[32:48]
        size_b = Signal(DIM_WIDTH)
        step = Signal(range(DIM_WIDTH + 2))
        m_tiles, n_tiles = Signal(DIM_WIDTH + 1), Signal(DIM_WIDTH + 1)
        m_rem = Signal(max(1, self._rows.bit_length()))
        n_rem = Signal(max(1, self._cols.bit_length()))
        b_bits = Signal(DIM_WIDTH)
        m_tiles_before, n_tiles_before = (Signal(2 * DIM_WIDTH + 1, name=f"{name}_tiles_before")
                                          for name in "mn")
        m_tiles_all, n_tiles_all = (Signal(2 * DIM_WIDTH + 2, name=f"{name}_tiles_all")
                                    for name in "mn")
        out_rows = Signal(2 * DIM_WIDTH + 2 + self._rows.bit_length())
        act_need, wgt_need = (Signal(3 * DIM_WIDTH + 2, name=f"{name}_need")
                              for name in ("act", "wgt"))
        out_need = Signal(len(out_rows) + DIM_WIDTH)
        k_bits, n_bits = Signal(DIM_WIDTH), Signal(DIM_WIDTH)
        sizes_ok = Signal()

        def divide_step(quotient, remainder, divisor):
            # Shift the next dividend bit (the top of `quotient`) into the remainder; the
            # quotient bit shifts in at the bottom.
            trial = Signal(len(remainder) + 1)
            m.d.comb += trial.eq(Cat(quotient[-1], remainder))
            with m.If(trial >= divisor):
                m.d.sync += [remainder.eq(trial - divisor), quotient.eq(Cat(1, quotient[:-1]))]
            with m.Else():
                m.d.sync += [remainder.eq(trial), quotient.eq(Cat(0, quotient[:-1]))]

        abort_wait = Signal(range(ABORT_WAIT_LIMIT))
        if self._clock_levels > 1:
            level_wait = Signal(range(_LEVEL_WAIT_LIMIT))
            level_reply = Cat(Const(REPLY_OK, 8), self.level_active.as_unsigned(),
                              Const(0, 8 - len(self.level_active)),
                              Const(self._clock_levels, 8))

        m.d.comb += [
            self.tx.payload.eq(reply[0:8]),
            self.m_size.eq(args[0:16]),
            self.k_size.eq(args[16:32]),
            self.n_size.eq(args[32:48]),
            self.b_size.eq(size_b),
        ]

        def send(value, length, *, read=False):
            m.d.sync += [reply.eq(value), reply_left.eq(length), then_read.eq(read)]
            m.next = "SEND"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.rx.ready.eq(1)
                m.d.sync += quiet.eq(0)
                with m.If(self.rx.valid):
                    m.d.sync += [command.eq(self.rx.payload), arg_index.eq(0)]
                    with m.Switch(self.rx.payload):
                        for code, nbytes in self._arg_bytes.items():
                            with m.Case(code):
                                m.d.sync += arg_count.eq(nbytes)
                                m.next = "ARGS" if nbytes else "EXEC"
                        with m.Default():
                            send(REPLY_UNKNOWN, 1)

            with m.State("ARGS"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(self.rx.valid):
                    m.d.sync += [args.word_select(arg_index, 8).eq(self.rx.payload),
                                 arg_index.eq(arg_index + 1)]
                    with m.If(arg_index + 1 == arg_count):
                        m.next = "CHECK_END"
                with m.Elif(stalled):
                    m.next = "IDLE"           # cut off: dropped, no reply

            with m.State("CHECK_END"):
                m.d.sync += [access_end.eq(arg_addr + arg_count_words), depth_reg.eq(depth)]
                m.next = "CHECK_RANGE"

            with m.State("CHECK_RANGE"):
                m.d.sync += in_range.eq(access_end <= depth_reg)
                m.next = "EXEC"

            with m.State("EXEC"):
                m.d.sync += [addr.eq(arg_addr), count.eq(arg_count_words), byte_index.eq(0)]
                with m.Switch(command):
                    with m.Case(Command.INFO):
                        m.d.sync += info_index.eq(0)
                        m.next = "SEND_INFO"
                    with m.Case(Command.STATUS):
                        # Bits 3..7 are reserved and read 0; the error bit belongs to the job
                        # that ended (done), so a START clears it.
                        send(Cat(Const(REPLY_OK, 8), self.busy, done_flag,
                                 self.error & done_flag), 2)
                    with m.Case(Command.CYCLES):
                        send(Cat(Const(REPLY_OK, 8), self.cycles), 5)
                    with m.Case(Command.START, Command.BATCH):
                        with m.If(self.busy):
                            send(REPLY_ERROR, 1)
                        with m.Else():
                            m.d.sync += [
                                m_tiles.eq(size_m + (self._rows - 1)), m_rem.eq(0),
                                n_tiles.eq(size_n + (self._cols - 1)), n_rem.eq(0),
                                size_b.eq(Mux(command == Command.BATCH, args[48:64], 1)),
                                step.eq(0),
                            ]
                            m.next = "SIZE_DIV"
                    with m.Case(Command.ABORT):
                        with m.If(self.busy):
                            m.d.sync += [self.abort.eq(1), abort_wait.eq(0)]
                            m.next = "ABORT_WAIT"
                        with m.Else():
                            send(REPLY_OK, 1)     # no job: nothing to stop, nothing changes
                    with m.Case(Command.WRITE):
                        # A refused write still consumes its payload so the link stays in
                        # step; the reply after the payload says whether it was stored.
                        m.d.sync += discard.eq((buf > Buffer.PARAM) | ~in_range | self.busy)
                        m.next = "WSTART"
                    with m.Case(Command.READ):
                        with m.If((buf != Buffer.OUT) | ~in_range | self.busy):
                            send(REPLY_ERROR, 1)
                        with m.Else():
                            send(REPLY_OK, 1, read=arg_count_words != 0)
                    if self._clock_levels > 1:
                        with m.Case(Command.LEVEL):
                            # Allowed while a job runs: the clock select never loses an edge.
                            level_arg = args[0:8]
                            with m.If(level_arg == LEVEL_QUERY):
                                send(level_reply, 1 + LEVEL_REPLY_BYTES)
                            with m.Elif(level_arg < self._clock_levels):
                                m.d.sync += [self.level.eq(level_arg), level_wait.eq(0)]
                                m.next = "LEVEL_WAIT"
                            with m.Else():
                                send(REPLY_ERROR, 1)      # no such level: nothing changes

            with m.State("SIZE_DIV"):
                divide_step(m_tiles, m_rem, self._rows)
                divide_step(n_tiles, n_rem, self._cols)
                m.d.sync += step.eq(step + 1)
                with m.If(step == DIM_WIDTH):
                    m.d.sync += [step.eq(0), m_tiles_before.eq(0), n_tiles_before.eq(0),
                                 b_bits.eq(size_b - 1)]
                    m.next = "SIZE_BATCH"

            with m.State("SIZE_BATCH"):
                # (B - 1) * tiles, most significant bit of B - 1 first. Once no bit is left
                # and nothing was added the products are 0: START (B = 1) takes one step.
                m.d.sync += [
                    m_tiles_before.eq((m_tiles_before << 1) + Mux(b_bits[-1], m_tiles, 0)),
                    n_tiles_before.eq((n_tiles_before << 1) + Mux(b_bits[-1], n_tiles, 0)),
                    b_bits.eq(b_bits << 1),
                    step.eq(step + 1),
                ]
                with m.If((step == DIM_WIDTH - 1) |
                          ((b_bits == 0) & (m_tiles_before == 0) & (n_tiles_before == 0))):
                    m.next = "SIZE_ROWS"

            with m.State("SIZE_ROWS"):
                m.d.sync += [
                    m_tiles_all.eq(m_tiles_before + m_tiles),
                    n_tiles_all.eq(n_tiles_before + n_tiles),
                    # The batch's output rows: the padded rows of every GEMM but the last.
                    out_rows.eq(times_constant(m_tiles_before, self._rows) + size_m),
                    step.eq(0), act_need.eq(0), wgt_need.eq(0), out_need.eq(0),
                    k_bits.eq(size_k), n_bits.eq(size_n),
                ]
                m.next = "SIZE_MUL"

            with m.State("SIZE_MUL"):
                # Most significant multiplier bit first: need = 2 * need + bit * multiplicand.
                m.d.sync += [
                    act_need.eq((act_need << 1) + Mux(k_bits[-1], m_tiles_all, 0)),
                    wgt_need.eq((wgt_need << 1) + Mux(k_bits[-1], n_tiles_all, 0)),
                    out_need.eq((out_need << 1) + Mux(n_bits[-1], out_rows, 0)),
                    k_bits.eq(k_bits << 1),
                    n_bits.eq(n_bits << 1),
                    step.eq(step + 1),
                ]
                with m.If(step == DIM_WIDTH - 1):
                    m.next = "SIZE_CMP"

            with m.State("SIZE_CMP"):
                act_depth, wgt_depth, param_depth, out_depth = self._depths
                batch_ok = (size_b == 1) if not self._runs_batches else (size_b != 0)
                m.d.sync += sizes_ok.eq(
                    (size_m != 0) & (size_k != 0) & (size_n != 0) & batch_ok &
                    (act_need <= act_depth) & (wgt_need <= wgt_depth) &
                    (n_tiles <= param_depth // self._cols) & (out_need <= out_depth))
                m.next = "START_GO"

            with m.State("START_GO"):
                with m.If(sizes_ok):
                    m.d.sync += [self.start.eq(1), done_flag.eq(0)]
                    send(REPLY_OK, 1)
                with m.Else():
                    send(REPLY_ERROR, 1)          # nothing started, nothing changed

            with m.State("ABORT_WAIT"):
                # Reply once the accelerator has stopped and its end has crossed over, so that
                # a STATUS after the reply shows it; bounded in case its clock does not run.
                m.d.sync += abort_wait.eq(abort_wait + 1)
                with m.If((~self.busy & done_flag) | (abort_wait == ABORT_WAIT_LIMIT - 1)):
                    send(REPLY_OK, 1)

            if self._clock_levels > 1:
                with m.State("LEVEL_WAIT"):
                    # Reply once the clock select has taken the level (two cycles), so that
                    # the reply names it; bounded in case nothing answers.
                    m.d.sync += level_wait.eq(level_wait + 1)
                    with m.If((self.level_active == self.level) |
                              (level_wait == _LEVEL_WAIT_LIMIT - 1)):
                        send(level_reply, 1 + LEVEL_REPLY_BYTES)

            with m.State("SEND"):
                m.d.comb += self.tx.valid.eq(1)
                with m.If(self.tx.ready):
                    m.d.sync += [reply.eq(reply >> 8), reply_left.eq(reply_left - 1)]
                    with m.If((reply_left == 1) & then_read):
                        m.next = "RADDR"
                    with m.Elif(reply_left == 1):
                        m.next = "IDLE"

            with m.State("SEND_INFO"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(info_table[info_index])]
                with m.If(self.tx.ready):
                    m.d.sync += info_index.eq(info_index + 1)
                    with m.If(info_index == len(info_table) - 1):
                        m.next = "IDLE"

            with m.State("WSTART"):
                with m.If(count == 0):
                    send(Mux(discard, REPLY_ERROR, REPLY_OK), 1)
                with m.Else():
                    m.next = "WDATA"

            with m.State("WDATA"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(self.rx.valid):
                    m.d.sync += [word.word_select(byte_index, 8).eq(self.rx.payload),
                                 byte_index.eq(byte_index + 1)]
                    with m.If(byte_index + 1 == word_bytes):
                        m.next = "WCOMMIT"
                with m.Elif(stalled):
                    # Cut off: the words completed so far are stored, this partial one is not;
                    # no reply.
                    m.next = "IDLE"

            with m.State("WCOMMIT"):
                ports = [self.act_wr, self.wgt_wr, self.param_wr]
                for port in ports:
                    m.d.comb += port.addr.eq(addr)
                m.d.comb += [
                    self.act_wr.data.eq(word),
                    self.wgt_wr.data.eq(word),
                    self.param_wr.data.bias.eq(word[0:32]),
                    self.param_wr.data.mult.eq(word[32:63]),
                    self.param_wr.data.shift.eq(word[64:70]),
                ]
                with m.Switch(buf):
                    for index, port in enumerate(ports):
                        with m.Case(index):
                            m.d.comb += port.en.eq(~discard)
                m.d.sync += [addr.eq(addr + 1), count.eq(count - 1), byte_index.eq(0)]
                with m.If(count == 1):
                    send(Mux(discard, REPLY_ERROR, REPLY_OK), 1)
                with m.Else():
                    m.next = "WDATA"

            with m.State("RADDR"):
                m.d.comb += self.out_rd.addr.eq(addr)
                m.next = "RLATCH"

            with m.State("RLATCH"):
                # Block RAM data goes straight into a register (its clock-to-out is slow).
                m.d.comb += self.out_rd.addr.eq(addr)
                m.d.sync += read_byte.eq(self.out_rd.data)
                m.next = "RSEND"

            with m.State("RSEND"):
                m.d.comb += [
                    self.tx.valid.eq(1),
                    self.tx.payload.eq(read_byte),
                ]
                with m.If(self.tx.ready):
                    m.d.sync += [addr.eq(addr + 1), count.eq(count - 1)]
                    with m.If(count == 1):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "RADDR"
        return m
