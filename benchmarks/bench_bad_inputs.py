"""How the commands take bad input: generated configs, config files and flags, counted by outcome.

    python benchmarks/bench_bad_inputs.py [--count N] [--seed S] [--repo DIR]

Each input runs through `gen.__main__.main` in this process (``--repo`` runs another checkout's
`gen`, to compare before and after a change). An outcome is ``refused`` (exit 2 with an
``error:`` line, one line), ``accepted`` (exit 0), ``multi-line`` (refused, but the message
spans lines) or ``traceback`` (any exception escaping the command). The goal is no tracebacks.
"""

import argparse
import contextlib
import copy
import io
import random
import sys
import tempfile
from pathlib import Path

SCALARS = (None, True, False, 0, -1, 1, 2 ** 40, -2 ** 70, 1.5, float("nan"), float("inf"),
           "", "x", "auto", "ulx3s", "1e6", "\x00", "a" * 5000, [], {}, [1, 2], {"a": 1})


def random_value(rng):
    if rng.random() < 0.5:
        return rng.choice(SCALARS)
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randint(-2 ** 33, 2 ** 33)
    if kind == 1:
        return rng.uniform(-1e6, 1e6)
    if kind == 2:
        return "".join(rng.choice("ab-_ ./\\\n\t\u00e9") for _ in range(rng.randrange(30)))
    return [random_value(rng) for _ in range(rng.randrange(3))]


def mutated_config(rng, raw):
    raw = copy.deepcopy(raw)
    paths = [(k,) for k in raw] + [(s, k) for s in raw if isinstance(raw[s], dict)
                                   for k in raw[s]]
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        node = raw
        for key in path[:-1]:
            node = node if not isinstance(node.get(key), dict) else node[key]
        action = rng.randrange(3)
        if action == 0:
            node.pop(path[-1], None)
        elif action == 1:
            key = random_value(rng) if rng.random() < 0.3 else path[-1] + "x"
            node[key if isinstance(key, (str, int, float, bool, type(None))) else str(key)] = 1
        else:
            value = random_value(rng)
            node[path[-1]] = "auto-not" if value == "auto" else value
    return raw


def random_bytes(rng, base):
    data = bytearray(base)
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(4)
        at = rng.randrange(len(data) + 1)
        if kind == 0:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 1:
            del data[at:at + rng.randint(1, 40)]
        elif kind == 2:
            data = data[:at]
        else:
            data[at:at] = rng.choice([b"&a [x]\n", b"*a", b"\nname: dup\n", b"\xff\xfe", b"{{"])
    return bytes(data)


FLAGS = {
    "alloc": ["--seed", "--clock-mhz", "--power-cap-mw", "--evaluations", "--name", "--network",
              "--board", "--baud"],
    "build": ["--seed", "--board", "--config"],
    "check": ["--board", "--config"],
    "run-gemm": ["--m", "--k", "--n", "--seed", "--port", "--timeout"],
    "prune": ["--seed", "--block", "--tolerance"],
    "workloads": ["--batch"],
}
FLAG_VALUES = ("-1", "0", "1e9", "nan", "x", "", "999999999999", "-0", "3.5", "/", "..",
               "a" * 300, "ulx3s-45f", "resnet50", "/dev/null")


def random_flags(rng, tmp):
    command = rng.choice(sorted(FLAGS))
    argv = [command]
    for flag in rng.sample(FLAGS[command], rng.randint(1, min(2, len(FLAGS[command])))):
        argv += [flag, rng.choice(FLAG_VALUES)]
    if command == "alloc":
        argv += ["--method", "random", "--out", str(tmp)]
        if "--evaluations" not in argv:
            argv += ["--evaluations", "10"]
    if command in ("build", "run-gemm") and "--config" not in argv:
        # never start a real build or open a real port: a bad board/port stays bad input
        argv += ["--out", str(tmp / "missing" / "\x00")] if command == "build" else []
    if command == "run-gemm" and "--port" not in argv:
        argv += ["--port", "/nonexistent"]
    if command == "prune":
        argv += ["--out", "/proc/forbidden"]     # refused before any training
    return argv


SHOWN = []


def outcome(main, argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            SHOWN.append(f"traceback {argv!r}: {type(exc).__name__}: {str(exc)[:160]}")
            return "traceback"
    text = err.getvalue().strip()
    if code == 0:
        return "accepted"
    if "Traceback" in text:
        return "traceback"
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        SHOWN.append(f"multi-line {argv!r}: {text[:300]!r}")
        return "multi-line"
    return "refused"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="inputs per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent))
    args = parser.parse_args(argv)
    sys.path.insert(0, args.repo)
    import yaml
    from gen.__main__ import main as gen_main
    default = Path(args.repo) / "gen" / "configs" / "default.yaml"
    raw = yaml.safe_load(default.read_text())
    rng = random.Random(args.seed)
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "bad.yaml"

        def config_mapping():
            path.write_text(yaml.safe_dump(mutated_config(rng, raw), allow_unicode=True))
            return ["check", "--config", str(path)]

        def config_bytes():
            path.write_bytes(random_bytes(rng, default.read_bytes()))
            return ["check", "--config", str(path)]

        for name, make in (("config mappings (gen check)", config_mapping),
                           ("config file bytes (gen check)", config_bytes),
                           ("command-line flags", lambda: random_flags(rng, tmp))):
            counts = {}
            for _ in range(args.count):
                result = outcome(gen_main, make())
                counts[result] = counts.get(result, 0) + 1
            tables[name] = counts
    print(f"{'inputs':32s} {'tried':>6s} {'refused':>8s} {'accepted':>9s} {'multi-line':>11s} "
          f"{'traceback':>10s}")
    for name, counts in tables.items():
        print(f"{name:32s} {sum(counts.values()):6d} {counts.get('refused', 0):8d} "
              f"{counts.get('accepted', 0):9d} {counts.get('multi-line', 0):11d} "
              f"{counts.get('traceback', 0):10d}")
    for line in SHOWN:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
