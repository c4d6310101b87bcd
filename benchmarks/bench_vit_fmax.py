"""Route the ViT design at a target clock and print what nextpnr achieves.

    python benchmarks/bench_vit_fmax.py [--config gen/configs/vit-digits.yaml] \
        [--target-mhz 100] [--seed 2] [--router router1|router2]

`gen build` builds at the config's own clock; this script asks for a higher one (the
issue's 100 MHz) without touching the config, so that the reported figure is the design's
Fmax rather than "timing met". It makes the netlist exactly the way `gen build` does
(`ViTBuild.top()` through `flows.ecp5.run_flow`), writes it to
rtl_out/bench/vit-fmax-<target>-s<seed>-<router>/, and prints a table: Fmax per clock,
the resources, the tool times, and the critical path nextpnr reported for the accelerator
clock (its cells with their source lines, from nextpnr's log).
"""

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.ecp5 import run_flow               # noqa: E402
from gen.errors import UserError              # noqa: E402
from gen.vit.config import parse_vit_config   # noqa: E402
from gen.vit.design import prepare_vit_design  # noqa: E402
from gen.yamlfile import read_yaml            # noqa: E402


def critical_path(log_text, clock_net="$glbnet$clk"):
    """The lines of nextpnr's critical-path report for the clock net ``clock_net`` (the
    accelerator's ``sync`` clock; the last such report in the log: the post-route one)."""
    blocks = re.split(r"\nInfo: Critical path report for clock '", log_text)
    chosen = None
    for block in blocks[1:]:
        name = block.split("'", 1)[0]
        if name == clock_net:
            chosen = block
    if chosen is None:
        return []
    lines = []
    for line in chosen.splitlines()[1:]:
        if not line.startswith("Info:") or "Critical path report" in line:
            break
        if "Defined in" in line or "/share/" in line or not line[5:].strip():
            continue
        lines.append(line[5:].rstrip())
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "gen/configs/vit-digits.yaml"))
    parser.add_argument("--target-mhz", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=2,
                        help="nextpnr placement seed (2: the one gen/configs/vit-digits.yaml names)")
    parser.add_argument("--router", choices=("router1", "router2"), default="router1",
                        help="nextpnr router (router1 is nextpnr's default)")
    parser.add_argument("--nextpnr", action="append", default=[], metavar="FLAG",
                        help="a further nextpnr flag, e.g. --nextpnr=--tmg-ripup (repeatable; "
                             "a flag with a value as --nextpnr=--placer-heap-timingweight=30)")
    parser.add_argument("--out", default=str(ROOT / "rtl_out" / "bench"))
    args = parser.parse_args(argv)
    try:
        raw = read_yaml(args.config, "--config")
        config = parse_vit_config(raw, source=args.config)
        config = dataclasses.replace(config, clock_mhz=args.target_mhz)
        design = prepare_vit_design(config)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = [part for flag in args.nextpnr for part in flag.split("=", 1)]
    tag = "".join("-" + flag.lstrip("-").split("=")[0].replace("placer-heap-", "")
                  + (flag.split("=")[1] if "=" in flag else "") for flag in args.nextpnr)
    folder = Path(args.out) / (f"vit-fmax-{args.target_mhz:g}-s{args.seed}-{args.router}{tag}")
    start = time.monotonic()
    result = run_flow(design.top(), design.board, folder, seed=args.seed,
                      router=None if args.router == "router1" else args.router,
                      nextpnr_options=options,
                      progress=lambda line: print(line, flush=True)
                      if ("Max frequency" in line or line.startswith("[")) else None)
    print(f"\nViT design {design.config.name} at a {args.target_mhz:g} MHz target, placement "
          f"seed {args.seed}, {args.router} {' '.join(options)}; {time.monotonic() - start:.0f} s "
          f"(synth {result.seconds['synth']:.0f} s, pnr {result.seconds['pnr']:.0f} s)")
    print(f"{'clock':40s} {'achieved MHz':>12s} {'target MHz':>10s}")
    for net, f in result.fmax.items():
        print(f"{net:40s} {f['achieved_mhz']:12.1f} {f['constraint_mhz']:10.1f}")
    print(f"{'resource':16s} {'used':>7s} {'available':>9s}")
    for cell in ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD", "TRELLIS_RAMW"):
        if cell in result.utilization:
            u = result.utilization[cell]
            print(f"{cell:16s} {u['used']:7d} {u['available']:9d}")
    path = critical_path((folder / "nextpnr.log").read_text(errors="replace"))
    if path:
        print("\ncritical path of the accelerator clock (nextpnr):")
        for line in path:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
