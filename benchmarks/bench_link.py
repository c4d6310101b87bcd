"""Host link vs accelerator: what a GEMM spends on the USB serial link and what on compute.

For the shipped design (or ``--config``), at 1 Mbaud and 3 Mbaud (or ``--baud``): the host
clock the generator picks for each rate (the board oscillator or a PLL CLKOS output), the
link's bytes per second (8N1: baud / 10), the bytes the protocol moves for a GEMM (A, B, the
requantization parameters, C and the commands, both directions, as `gen.host.driver` sends
them) and the time they take, against the accelerator's cycles (`gen.cycles.gemm_cycles`) at
the configured clock. No board is needed: this is the model the generator reports in
`gen check` and manifest.json; USB latency (the FT231X's latency timer) is not counted.

    python benchmarks/bench_link.py [--config FILE] [--baud 1000000 3000000] [--gemm 128 128 128]
"""

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gen.config import HostConfig, load_config            # noqa: E402
from gen.design import prepare_design                     # noqa: E402


def rows(config, bauds, gemm):
    for baud in bauds:
        design = prepare_design(dataclasses.replace(config, host=HostConfig(baud=baud)))
        r = design.link_report(*gemm)
        source = ("oscillator" if design.host_clock_source == "oscillator" else
                  f"PLL CLKOS {design.pll.vco_mhz:g}/{design.pll.clkos_div}")
        yield {"baud": baud, "host": f"{design.host_clock_mhz:g} MHz {source}",
               "divisor": design.uart_divisor, "exact": design.baud_actual == baud,
               "bytes_per_s": r["bytes_per_second"], "bytes": r["bytes"],
               "transfer_ms": r["transfer_ms"], "compute_ms": r["compute_ms"],
               "cycles": r["compute_cycles"], "ratio": r["transfer_to_compute"],
               "clock_mhz": design.clock_mhz}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="design config (default: the built-in default)")
    parser.add_argument("--baud", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--gemm", type=int, nargs=3, default=[128, 128, 128],
                        metavar=("M", "K", "N"))
    args = parser.parse_args(argv)
    config = load_config(args.config)
    m, k, n = args.gemm
    table = list(rows(config, args.baud, (m, k, n)))
    first = table[0]
    b = first["bytes"]
    print(f"{config.name}: {config.array.rows}x{config.array.cols} array at "
          f"{first['clock_mhz']:g} MHz; GEMM {m}x{k}x{n} moves {b['total']} bytes "
          f"(A {b['a']}, B {b['b']}, params {b['params']}, C {b['c']}, commands "
          f"{b['commands']}); compute {first['cycles']} cycles")
    header = (f"{'baud':>9s}  {'host clock':28s} {'div':>4s} {'exact':>5s} {'bytes/s':>8s} "
              f"{'transfer ms':>11s} {'compute ms':>10s} {'transfer/compute':>16s}")
    print(header)
    print("-" * len(header))
    for row in table:
        print(f"{row['baud']:9d}  {row['host']:28s} {row['divisor']:4d} "
              f"{'yes' if row['exact'] else 'no':>5s} {row['bytes_per_s']:8.0f} "
              f"{row['transfer_ms']:11.1f} {row['compute_ms']:10.3f} {row['ratio']:15.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
