"""Pre-synthesis resource estimate of a design, checked against the board's budget.

Multipliers and block RAMs are counted from the structure. LUT4 and FF counts are linear
models in the number of PEs and buffer widths; their coefficients were fitted to nextpnr's
utilization of generated designs (see `benchmarks/bench_foundation.py`, which prints the
estimate beside the measurement for each design it builds).
"""

import math
from .boards import Resources
from .errors import UserError
from .hw.requant import REQUANT_MULTIPLIERS

__all__ = ["ResourceEstimate", "estimate_resources", "bram_blocks", "check_fits"]

# DP16KD aspect ratios (depth, width); 36 bits wide only as a simple dual-port RAM, which is
# how every buffer here is used (one write port, one read port).
DP16KD_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
# Below this many bits yosys keeps a memory in LUT RAM / registers rather than a block RAM.
BRAM_MIN_BITS = 2048

# Fitted coefficients (see module docstring): nextpnr's TRELLIS_COMB and TRELLIS_FF counts of
# the 4x4 and 8x16 designs (2026-11-25): 4267 / 4232 and 15473 / 20016.
LUT_BASE = 2650
LUT_PER_PE = 100
FF_BASE = 1950
FF_PER_PE = 141
LUT_PER_BUFFER_BIT = 0       # block-RAM buffers cost no LUTs per word bit worth modelling


def bram_blocks(width, depth):
    """DP16KD blocks for a ``width`` x ``depth`` memory (0 if it stays in logic)."""
    if width * depth < BRAM_MIN_BITS:
        return 0
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in DP16KD_SHAPES)


#: A design's estimated resources.
ResourceEstimate = Resources


def estimate_resources(config):
    rows, cols = config.array.rows, config.array.cols
    pes = rows * cols
    buffers = config.buffers
    # Operand buffers are one byte-wide memory per lane (see GemmAccelerator).
    memories = [*[(8, buffers.act_depth)] * rows, *[(8, buffers.wgt_depth)] * cols,
                (69, buffers.param_depth), (8, buffers.out_depth)]
    bram = sum(bram_blocks(w, d) for w, d in memories)
    logic_bits = sum(w * d for w, d in memories if bram_blocks(w, d) == 0)
    buffer_width_bits = sum(w for w, _ in memories)
    return ResourceEstimate(
        lut4=round(LUT_BASE + LUT_PER_PE * pes + LUT_PER_BUFFER_BIT * buffer_width_bits +
                   logic_bits / 4),
        ff=round(FF_BASE + FF_PER_PE * pes + logic_bits),
        mult18=pes + REQUANT_MULTIPLIERS,
        bram18k=bram,
    )


_ADVICE = {
    "mult18": "reduce array.rows * array.cols (each PE takes one 18x18 multiplier, plus "
              f"{REQUANT_MULTIPLIERS} for the requantizer)",
    "bram18k": "reduce buffers.* depths (or array.rows / array.cols, which widen the words)",
    "lut4": "reduce array.rows * array.cols",
    "ff": "reduce array.rows * array.cols",
}


def _largest_array(pes):
    """The squarest rows x cols with rows * cols <= pes."""
    rows = max(1, int(pes ** 0.5))
    return f"array.rows: {rows}, array.cols: {max(1, pes // rows)}"


def check_fits(config, board, estimate=None):
    """Raise :class:`UserError` naming every resource the design would exceed."""
    estimate = estimate or estimate_resources(config)
    problems = []
    for key, available in board.budget.as_dict().items():
        needed = getattr(estimate, key)
        if needed > available:
            advice = _ADVICE[key]
            if key == "mult18":
                advice += (f"; at most {available - REQUANT_MULTIPLIERS} PEs fit, e.g. "
                           f"{_largest_array(available - REQUANT_MULTIPLIERS)}")
            problems.append(f"{key}: needs about {needed}, {board.name} has {available}: "
                            f"{advice}")
    if problems:
        raise UserError(f"design {config.name!r} does not fit {board.name}:\n  " +
                        "\n  ".join(problems))
    return estimate
