"""Estimated register-to-register delays of a synthesized ECP5 netlist, every endpoint at once.

nextpnr names one critical path per clock, after a placement and a routing that take minutes
on a large design; closing timing needs every long path. This reads yosys's JSON netlist
(``top.json`` of a build folder, right after synthesis) and estimates, for every input of a
flip-flop, block RAM or multiplier, the worst delay from a flip-flop, block RAM or multiplier
output through LUTs, wide multiplexers and carry chains, with a fixed routing delay per hop.
The absolute figures are optimistic (routed hops on a spread-out design average more than
:data:`ROUTE_NS`), but the ranking points at the logic to pipeline, seconds after yosys.

    python -m flows.logic_depth rtl_out/<design>/build/top.json [--top 30] [--under system.core]
"""

import argparse
import collections
import json
import re
import sys
from dataclasses import dataclass

__all__ = ["ROUTE_NS", "Endpoint", "endpoint_delays", "by_module", "main"]

#: Delay assumed for each routed hop (ns); nextpnr's routed ECP5 hops are 0.6 - 5 ns.
ROUTE_NS = 0.9
#: Cell delays (ns), ECP5 speed grade 6 as nextpnr reports them.
LUT_NS, MUX_NS, CARRY_NS, SUM_NS = 0.24, 0.26, 0.06, 0.2
#: Clock-to-output of each kind of source (ns). A DP16KD is mapped without its output
#: register, and nextpnr times its read data 5.83 ns after the clock (the ViT design's routed
#: critical path at 89.2 MHz started there), so a block RAM's output can feed little but a
#: flip-flop at 100 MHz.
SOURCE_NS = {"TRELLIS_FF": 0.52, "DP16KD": 5.83, "MULT18X18D": 1.0, "ALU54B": 1.0,
             "TRELLIS_DPR16X4": 1.5}
_COMBINATIONAL = {"LUT4", "PFUMX", "L6MUX21", "CCU2C"}
_CLOCKS = {"CLK", "CLKA", "CLKB", "WCK"}


@dataclass(frozen=True)
class Endpoint:
    """One input pin of a sequential cell and the estimated worst delay into it."""
    delay_ns: float
    cell: str
    port: str
    path: tuple       # cell names from the source to the last combinational cell


def endpoint_delays(netlist, top="top"):
    """Every sequential input of module ``top`` of a yosys JSON netlist (a dict), worst
    first."""
    try:
        cells = netlist["modules"][top]["cells"]
    except (KeyError, TypeError):
        raise ValueError(f"netlist has no module {top!r}") from None
    driver, arrival = {}, {}
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) == "output":
                for bit in bits:
                    if not isinstance(bit, str):
                        driver[bit] = (name, port)

    def worst(conns, ports, add):
        best = (0.0, None)
        for port in ports:
            for bit in conns.get(port, ()):
                if not isinstance(bit, str):
                    value = solve(bit)[0] + add
                    if value > best[0]:
                        best = (value, bit)
        return best

    def solve(bit):
        # Iterative depth-first evaluation: carry chains are thousands of cells deep.
        stack = [bit]
        while stack:
            b = stack[-1]
            if b in arrival:
                stack.pop()
                continue
            if b not in driver:
                arrival[b] = (0.0, None)
                stack.pop()
                continue
            cell_name, port = driver[b]
            cell = cells[cell_name]
            if cell["type"] not in _COMBINATIONAL:
                arrival[b] = (SOURCE_NS.get(cell["type"], 0.5), None)
                stack.pop()
                continue
            pending = [x for bits in cell["connections"].values() for x in bits
                       if not isinstance(x, str) and x not in arrival and x in driver
                       and x != b and driver[x][0] != cell_name]
            if pending:
                stack.extend(pending)
                continue
            arrival[b] = _cell_arrival(cell, port, worst)
            stack.pop()
        return arrival[bit]

    ends = []
    for name, cell in cells.items():
        if cell["type"] not in SOURCE_NS:
            continue
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) != "input" or port in _CLOCKS:
                continue
            for bit in bits:
                if isinstance(bit, str):
                    continue
                delay = solve(bit)[0] + ROUTE_NS + 0.1
                ends.append(Endpoint(round(delay, 3), name, port, _trace(bit, driver, arrival,
                                                                         cells)))
    ends.sort(key=lambda e: (-e.delay_ns, e.cell, e.port))
    return ends


def _cell_arrival(cell, port, worst):
    conns, kind = cell["connections"], cell["type"]
    hop = ROUTE_NS
    if kind == "LUT4":
        return worst(conns, "ABCD", LUT_NS + hop)
    if kind in ("PFUMX", "L6MUX21"):
        # The multiplexer's data inputs come from the LUTs of the same slice.
        data = worst(conns, ("ALUT", "BLUT", "D0", "D1"), MUX_NS)
        select = worst(conns, ("C0", "SD"), MUX_NS + hop)
        return max(data, select, key=lambda x: x[0])
    low = ("A0", "B0", "C0", "D0")
    operands = low + ("A1", "B1", "C1", "D1") if port in ("COUT", "S1") else low
    carry = worst(conns, ("CIN",), CARRY_NS)
    inputs = worst(conns, operands, LUT_NS + CARRY_NS + hop)
    value, bit = max(carry, inputs, key=lambda x: x[0])
    return (value + (SUM_NS if port.startswith("S") else 0.0), bit)


def _trace(bit, driver, arrival, cells):
    path = []
    while bit is not None and bit in driver:
        name = driver[bit][0]
        path.append(name)
        if cells[name]["type"] not in _COMBINATIONAL:
            break
        bit = arrival.get(bit, (0.0, None))[1]
    return tuple(reversed(path))


def by_module(endpoints, *, above_ns, depth=5):
    """``{module: (worst ns, endpoints)}`` of the endpoints slower than ``above_ns``, the
    module being the first ``depth`` parts of the cell's hierarchical name."""
    groups = collections.defaultdict(list)
    for e in endpoints:
        if e.delay_ns < above_ns:
            break
        key = re.sub(r"_TRELLIS.*|_DO[AB]\d+.*|\$\d+$", "", ".".join(e.cell.split(".")[:depth]))
        groups[key].append(e.delay_ns)
    return {k: (max(v), len(v)) for k, v in sorted(groups.items(), key=lambda kv: -max(kv[1]))}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m flows.logic_depth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("netlist", help="yosys JSON netlist (a build folder's top.json)")
    parser.add_argument("--top", type=int, default=25, help="paths to print (default 25)")
    parser.add_argument("--under", default="", help="only cells whose name starts with this")
    parser.add_argument("--above", type=float, default=7.5,
                        help="group endpoints slower than this many ns by module (default 7.5)")
    parser.add_argument("--paths", action="store_true",
                        help="print every cell of each printed path, with its source line")
    args = parser.parse_args(argv)
    try:
        with open(args.netlist) as f:
            netlist = json.load(f)
        ends = [e for e in endpoint_delays(netlist) if e.cell.startswith(args.under)]
        cells = netlist["modules"]["top"]["cells"]
    except (OSError, ValueError) as error:
        print(f"error: {args.netlist}: {error}", file=sys.stderr)
        return 2
    print(f"{len(ends)} endpoints; estimated with {ROUTE_NS} ns a routed hop "
          f"(optimistic: compare with nextpnr's routed critical path)")
    print(f"{'ns':>6s}  endpoint  (path: source ... last cell)")
    for e in ends[:args.top]:
        print(f"{e.delay_ns:6.2f}  {e.cell}.{e.port}")
        if e.path and args.paths:
            for name in e.path:
                src = cells.get(name, {}).get("attributes", {}).get("src", "")
                print(f"        {name}  {src.split('|')[0]}")
        elif e.path:
            print(f"        from {e.path[0]}  ({len(e.path) - 1} cells)")
    print(f"\nendpoints slower than {args.above} ns, by module:")
    for module, (worst, count) in by_module(ends, above_ns=args.above).items():
        print(f"  {worst:6.2f} {count:6d}  {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
