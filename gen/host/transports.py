"""Byte transports for :class:`gen.host.driver.Driver`."""

__all__ = ["SerialTransport", "CocotbUartTransport", "CocotbByteTransport"]


class SerialTransport:
    """A real board's USB serial port, through pyserial.

    Parameters
    ----------
    port : str
        Device path, such as ``/dev/ttyUSB0``.
    baud : int
        Must equal the design's ``host.baud``.
    timeout : float
        Seconds a read may wait before it is an error.
    """

    def __init__(self, port, baud, *, timeout=5.0):
        import serial  # only a real board needs pyserial
        from ..errors import UserError
        self._port, self._baud = port, baud
        try:
            self._serial = serial.Serial(port, baudrate=baud, timeout=timeout)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise UserError(f"--port {port}: cannot open the serial port ({exc}); is the board "
                            f"plugged in, is this its port (ls /dev/ttyUSB*), may you use it "
                            f"(the dialout group)?") from None

    async def write(self, data):
        import serial
        try:
            self._serial.write(data)
        except serial.SerialException as exc:
            raise ConnectionError(f"writing to {self._port} failed ({exc})") from None

    async def read(self, count):
        import serial
        try:
            data = self._serial.read(count)
        except serial.SerialException as exc:
            raise ConnectionError(f"reading from {self._port} failed ({exc})") from None
        if len(data) != count:
            raise TimeoutError(f"the board on {self._port} answered {len(data)} of {count} "
                               f"bytes: is the bitstream loaded (python -m gen program), is the "
                               f"baud rate {self._baud} the design's?")
        return data

    def close(self):
        self._serial.close()


class CocotbUartTransport:
    """The simulated serial line of a design under cocotb: bit-level 8N1 on two pins.

    Parameters
    ----------
    rx, tx
        The design's serial input (driven here) and output (sampled here) handles.
    bit_time_ns : float
        One bit: the design's UART divisor times its clock period.
    timeout_bits : int
        Bit times a read may wait for a start bit before it is an error.
    """

    def __init__(self, rx, tx, bit_time_ns, *, timeout_bits=200000):
        import cocotb
        from cocotb.queue import Queue
        self._rx, self._tx = rx, tx
        self._bit = bit_time_ns
        self._timeout_bits = timeout_bits
        self._received = Queue()
        self._rx.value = 1
        self._monitor = cocotb.start_soon(self._receive())

    async def _receive(self):
        from cocotb.triggers import FallingEdge, Timer
        while True:
            await FallingEdge(self._tx)
            await Timer(self._bit * 1.5, unit="ns")
            value = 0
            for bit in range(8):
                value |= int(self._tx.value) << bit
                await Timer(self._bit, unit="ns")
            if int(self._tx.value) != 1:
                raise AssertionError("framing error: the design's stop bit is low")
            self._received.put_nowait(value)

    async def write(self, data):
        from cocotb.triggers import Timer
        for byte in data:
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self._rx.value = bit
                await Timer(self._bit, unit="ns")

    async def read(self, count):
        from cocotb.triggers import SimTimeoutError, with_timeout
        out = bytearray()
        for _ in range(count):
            try:
                out.append(await with_timeout(self._received.get(),
                                              self._bit * self._timeout_bits, "ns"))
            except SimTimeoutError:
                raise TimeoutError(f"no byte from the design after {self._timeout_bits} bit "
                                   f"times ({len(out)} of {count} received)") from None
        return bytes(out)


class CocotbByteTransport:
    """A design's byte streams under cocotb (``ViTHostSystem(byte_link=True)``): one byte per
    valid/ready handshake on the design's clock, instead of 10 bit times on a serial line.

    Parameters
    ----------
    rx_bus, tx_bus
        :class:`verif.streams.StreamBus` (or anything with ``valid``, ``ready`` and
        ``payload`` handles) of the design's byte input (driven here) and byte output
        (taken here: ``ready`` is 1 only while a read waits, so the design holds its reply
        bytes until they are read; nothing is lost).
    clock
        The clock of both streams.
    timeout_cycles : int
        Clock cycles a byte may wait to be taken (write) or to come (read) before it is an
        error.
    """

    def __init__(self, rx_bus, tx_bus, clock, *, timeout_cycles=1_000_000):
        self._rx, self._tx, self._clock = rx_bus, tx_bus, clock
        self._timeout = timeout_cycles
        self._rx.valid.value = 0
        self._tx.ready.value = 0

    async def write(self, data):
        from cocotb.triggers import ReadOnly, RisingEdge
        rx = self._rx
        await RisingEdge(self._clock)             # drive after an edge, never in read-only
        for index, byte in enumerate(data):
            rx.payload.value = byte
            rx.valid.value = 1
            for _ in range(self._timeout):
                await ReadOnly()
                taken = bool(int(rx.ready.value))
                await RisingEdge(self._clock)
                if taken:
                    break
            else:
                rx.valid.value = 0
                raise TimeoutError(f"the design took {index} of {len(data)} bytes; byte "
                                   f"{index} not taken within {self._timeout} cycles")
        rx.valid.value = 0

    async def read(self, count):
        from cocotb.triggers import ReadOnly, RisingEdge
        tx = self._tx
        out = bytearray()
        await RisingEdge(self._clock)
        tx.ready.value = 1
        try:
            waited = 0
            while len(out) < count:
                await ReadOnly()
                if int(tx.valid.value):
                    out.append(int(tx.payload.value))
                    waited = 0
                else:
                    waited += 1
                await RisingEdge(self._clock)
                if waited > self._timeout:
                    raise TimeoutError(f"no byte from the design within {self._timeout} "
                                       f"cycles ({len(out)} of {count} received)")
            return bytes(out)
        finally:
            tx.ready.value = 0
