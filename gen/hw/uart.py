"""8N1 UART receiver and transmitter with byte streams."""

import operator

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTReceiver", "UARTTransmitter", "MIN_DIVISOR"]

#: Smallest clocks-per-bit the receiver samples reliably (it samples once, mid-bit, up to one
#: cycle late: its error is that cycle plus the bit-time drift over the 9.5 bits to the stop
#: bit). In simulation (tests/test_uart.py) divisor 4 takes bytes back to back from a sender 2%
#: fast or slow (the generator's baud tolerance) and fails at 3% fast; divisors from 10 (3 Mbaud
#: at 30 MHz; the generator prefers 16 or more) take 4%.
MIN_DIVISOR = 4


def _check_divisor(divisor):
    divisor = operator.index(divisor)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"UART divisor must be at least {MIN_DIVISOR} clocks per bit, "
                         f"not {divisor}")
    return divisor


class UARTReceiver(wiring.Component):
    """Receives 8N1 bytes from the ``rx`` line.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit.

    Members
    -------
    rx : ``In(1, init=1)``
        Serial input (idle high); synchronized internally.
    o : ``Out(stream.Signature(8))``
        Received bytes. A byte that arrives while the previous one is unread is dropped and
        sets ``overrun``.
    overrun, framing_error : ``Out(1)``
        Sticky error flags.
    """

    def __init__(self, divisor):
        self._divisor = _check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "overrun": Out(1),
            "framing_error": Out(1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(self._divisor + self._divisor // 2 + 1))
        bit = Signal(range(9))
        shift = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # Wait one and a half bits to sample the middle of data bit 0.
                    m.d.sync += [timer.eq(self._divisor + self._divisor // 2 - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], rx)), bit.eq(bit + 1),
                                 timer.eq(self._divisor - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(~rx):
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
                    with m.Else():
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"):
                # Wait for the line to return to idle before looking for a start bit.
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTransmitter(wiring.Component):
    """Sends 8N1 bytes on the ``tx`` line.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Bytes to send.
    tx : ``Out(1, init=1)``
        Serial output (idle high).
    """

    def __init__(self, divisor):
        self._divisor = _check_divisor(divisor)
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self._divisor))
        bits = Signal(10, init=1)   # start bit, 8 data bits LSB first, stop bit
        remaining = Signal(range(11))

        m.d.comb += [self.tx.eq(bits[0]), self.i.ready.eq(remaining == 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                bits.eq(Cat(0, self.i.payload, 1)),
                remaining.eq(10),
                timer.eq(self._divisor - 1),
            ]
        with m.Elif(remaining != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [
                    bits.eq(Cat(bits[1:], 1)),
                    remaining.eq(remaining - 1),
                    timer.eq(self._divisor - 1),
                ]
        return m
