"""Cycle models of the generated engines: one home for every cycle count the project predicts.

Each model is derived from the pipeline it describes and is checked against Verilator's count
(``verif/test_gemm_accelerator.py``, ``verif/test_attention.py``, ``python -m gen cost-report``),
never only against itself. The hardware modules own their latency constants; this module reads
them and owns the tail constants that were measured against the RTL.

GEMM engine (``gen/hw/gemm.py``, output stationary)
    :func:`gemm_cycles` is the per-tile recurrence, :func:`gemm_cycles_closed_form` its
    vectorized closed form (equal on every shape, ``tests/test_cost.py``).

GEMM engine (``gen/hw/ws_gemm.py``, weight stationary)
    :func:`ws_gemm_cycles`, the per-pass recurrence; :func:`engine_gemm_cycles` picks the
    model of a dataflow.

Sparse attention kernel (``gen/hw/attention/``) and integer softmax unit (``gen/hw/softmax.py``)
    :func:`attention_mac_op_cycles` (one linear, scores or context op from its groups' beat
    counts), :func:`attention_softmax_op_cycles` (one softmax op),
    :func:`softmax_rows_cycles` (rows back to back through ``IntSoftmax``) and
    :func:`softmax_row_cycles` (its steady-state row period), all exact. The section at the
    end of this file; ``AttentionGeometry.mac_op_cycles`` / ``softmax_op_cycles`` and
    ``gen.hw.attention_layout`` call them.

Integer LayerNorm unit (``gen/hw/vit/layernorm.py``)
    :func:`layernorm_cycles` (rows through ``IntLayerNorm``), exact.
"""

import math

import numpy as np

from .hw.attention.control import JOB_START_LATENCY
from .hw.vit.engine import PROGRAM_WORD_STAGES
from .hw.attention.memory import BANKED_READ_LATENCY
from .hw.attention.mac import (DRAIN_PARAM_STAGES, MIN_GROUP_CYCLES, OPERAND_STAGES,
                                SEQUENCER_START_CYCLES)
from .hw.gemm import OPERAND_READ_LATENCY
from .hw.mac_lanes import MAC_LANES_LATENCY
from .hw.multiplier import MULTIPLIER_LATENCY
from .hw.requant import REQUANT_LATENCY
from .hw.softmax import EMIT_LATENCY as SOFTMAX_EMIT_LATENCY
from .hw.softmax import EXP_STAGES as SOFTMAX_EXP_STAGES
from .hw.softmax import HANDOFF_CYCLES as SOFTMAX_HANDOFF_CYCLES
from .hw.softmax import QUOTIENT_BITS as SOFTMAX_QUOTIENT_BITS
from .hw.ws_gemm import WS_M_TILE, WS_PASS_SETUP_CYCLES

__all__ = ["GEMM_TAIL_CYCLES", "padded_tail_slots", "ideal_gemm_cycles", "gemm_cycles",
           "early_last_spacing",
           "gemm_cycles_closed_form", "WS_TAIL_CYCLES", "ws_gemm_cycles", "engine_gemm_cycles", "ATTENTION_FIRST_GROUP_CYCLES", "ATTENTION_DRAIN_STAGES",
           "ATTENTION_FINISH_CYCLES", "ATTENTION_SOFTMAX_OP_CYCLES", "softmax_row_cycles",
           "softmax_rows_cycles", "attention_mac_op_cycles", "attention_softmax_op_cycles",
           "layernorm_cycles"]

#: Drain output register, requantizer input acceptance, two registered completion stages and
#: the finishing cycle; the requantizer's latency overlaps the padding slots the drain skips
#: after the last real output of the last tile (found by ``python -m gen cost-report``).
GEMM_TAIL_CYCLES = 5


def _ceil_div(a, b):
    return -(-a // b)


def padded_tail_slots(m, n, rows, cols, drain_lanes=1):
    """Drain beats of the last tile after its last one with a real output (row-major drain
    order, ``drain_lanes`` adjacent columns a beat)."""
    valid_rows, valid_cols = (m - 1) % rows + 1, (n - 1) % cols + 1
    per_row = cols // drain_lanes
    return rows * per_row - ((valid_rows - 1) * per_row + _ceil_div(valid_cols, drain_lanes))


def ideal_gemm_cycles(m, k, n, rows, cols, batch=1):
    """Every PE busy every cycle: B*M*K*N / (R*C)."""
    return batch * m * k * n / (rows * cols)


def early_last_spacing(rows, cols):
    """Cycles at least between two last beats when the second issues before the first tile is
    copied (``gen.hw.gemm.OutputStationaryGemm``: ``R + C - 1``, and never in the cycle
    right after a last beat)."""
    return max(rows + cols - 1, 2)


def gemm_cycles(m, k, n, rows, cols, drain_lanes=1, batch=1):
    """Cycles from START to done of one GEMM job (``batch`` GEMMs of one shape, their tiles
    one after the other) with the output never stalled.

    Tile t's last beat issues at ``c_t``; its operands leave the buffers
    ``OPERAND_READ_LATENCY`` cycles later; the array needs ``R + C + MULTIPLIER_LATENCY``
    cycles to finish it in every PE (systolic skew plus the multiplier pipeline); the drain
    sees the full hold registers one cycle after that and copies the tile at ``x_t`` once its
    chains are free, then needs ``D = R*C/drain_lanes`` cycles. The next tile's last beat may
    issue after the copy, or early, before it: at least :func:`early_last_spacing` cycles
    after ``c_t``, once the drain has sent the tile before (``x_{t-1} + D + 2``), and no later
    than the cycle the copy could first happen (``c_t + to_copy``).
    """
    tiles = batch * math.ceil(m / rows) * math.ceil(n / cols)
    latency, drain = rows + cols + MULTIPLIER_LATENCY, rows * cols // drain_lanes
    to_copy = OPERAND_READ_LATENCY + 1 + latency
    spacing = early_last_spacing(rows, cols)
    issue = k - 1                      # c_0
    copy = issue + to_copy             # x_0
    drain_free = None                  # x_{t-1} + D + 2
    for _ in range(tiles - 1):
        early = max(issue + k, issue + spacing, drain_free if drain_free is not None else 0)
        next_issue = early if early <= issue + to_copy else max(issue + k, copy + 1)
        drain_free = copy + drain + 2
        issue = next_issue
        copy = max(issue + to_copy, copy + drain + 1)
    return (copy + drain + GEMM_TAIL_CYCLES +
            max(REQUANT_LATENCY - padded_tail_slots(m, n, rows, cols, drain_lanes), 0))


#: Weight-stationary: the drain's memory stage and output register, the requantizer, two
#: registered completion stages and the finishing cycle, after the last drain read.
WS_TAIL_CYCLES = 2 + REQUANT_LATENCY + 3


def ws_gemm_cycles(m, k, n, rows, cols, drain_lanes=1, m_tile=WS_M_TILE):
    """Cycles from START to done of one weight-stationary GEMM job, output never stalled.

    Passes run in the order column tile, chunk of ``m_tile`` rows, weight tile. The first
    tile is captured ``R + 1`` cycles after the job starts; pass ``p`` is taken at ``x_p``,
    no earlier than its capture, than the previous pass's last row (``x_{p-1} + rows``) and,
    for a chunk's first pass, than its bank's release; its rows issue at ``x_p + 1 ..
    x_p + rows``, and the next tile is captured at ``x_p + R + WS_PASS_SETUP_CYCLES``, so the
    passes of one chunk follow each other every ``max(rows, R + WS_PASS_SETUP_CYCLES)``
    cycles. A chunk's last row reaches the last column's accumulator, and the chunk is done,
    ``OPERAND_READ_LATENCY + R + C + MULTIPLIER_LATENCY + 3`` cycles after it issues; its
    drain begins a cycle later (or when the previous chunk's drain ends), reads ``rows *
    ceil(n_valid / L)`` beats, and releases the bank two cycles after its last read.

    Every argument may be a numpy array (they broadcast; the cost model scores populations
    with it): the loop runs over column tiles and chunks, the passes of a chunk in closed form.
    """
    m, k, n, rows, cols, lanes, m_tile = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.int64) for v in (m, k, n, rows, cols, drain_lanes, m_tile)))
    k_tiles, n_tiles, chunks = _ceil_div(k, rows), _ceil_div(n, cols), _ceil_div(m, m_tile)
    to_done = OPERAND_READ_LATENCY + rows + cols + MULTIPLIER_LATENCY + 3
    setup = rows + WS_PASS_SETUP_CYCLES
    capture, last_row = rows + 1, np.zeros_like(m)
    bank_free = [np.zeros_like(m), np.zeros_like(m)]
    drain_free, last_read = np.zeros_like(m), np.zeros_like(m)
    steps = int((n_tiles * chunks).max()) if m.size else 0
    for step in range(steps):
        active = step < n_tiles * chunks
        nt, c = step // chunks, step % chunks
        beats_per_row = _ceil_div(np.minimum(cols, n - nt * cols), lanes)
        chunk_rows = np.minimum(m_tile, m - c * m_tile)
        bank = step % 2
        first = np.maximum(np.maximum(capture, last_row), bank_free[bank])
        period = np.maximum(chunk_rows, setup)
        final = first + (k_tiles - 1) * period
        begin = np.maximum(final + chunk_rows + to_done + 1, drain_free)
        read = begin + beats_per_row * chunk_rows
        capture = np.where(active, final + setup, capture)
        last_row = np.where(active, final + chunk_rows, last_row)
        drain_free = np.where(active, read + 1, drain_free)
        bank_free[bank] = np.where(active, read + 2, bank_free[bank])
        last_read = np.where(active, read, last_read)
    total = last_read + WS_TAIL_CYCLES
    return int(total) if total.ndim == 0 else total


def engine_gemm_cycles(m, k, n, rows, cols, drain_lanes=1, *, dataflow="output_stationary",
                       m_tile=None, batch=1):
    """Cycles of one GEMM job (``batch`` GEMMs) on the engine of ``dataflow`` (its exact
    model)."""
    if dataflow == "weight_stationary":
        if batch != 1:
            raise ValueError("the weight-stationary engine runs no batches (batch must be 1)")
        return ws_gemm_cycles(m, k, n, rows, cols, drain_lanes, m_tile or WS_M_TILE)
    if dataflow != "output_stationary":
        raise ValueError(f"no cycle model for dataflow {dataflow!r}")
    if m_tile is not None:
        raise ValueError("m_tile is a parameter of the weight-stationary engine only")
    return gemm_cycles(m, k, n, rows, cols, drain_lanes, batch)


def gemm_cycles_closed_form(m, k, n, rows, cols, drain_lanes=1, batch=1):
    """Cycles of one GEMM job on the generated engine, from START to done (output never
    stalled): the closed form of :func:`gemm_cycles`.

    With ``a = R + C + MULTIPLIER_LATENCY + OPERAND_READ_LATENCY + 1`` and
    ``D = R*C/drain_lanes``: for ``K > a`` no last beat can issue early, and with tile issue
    times ``i_t`` and drain copy times ``c_t``, ``d_t = c_t - i_t`` obeys
    ``i_{t+1} = i_t + max(K, d_t + 1)`` and ``d_{t+1} = max(a, d_t + D + 1 - (i_{t+1} - i_t))``:
    after at most one transient phase the tiles advance by a constant period, so the last copy
    time has a closed form. For ``K <= a`` see :func:`_early_copy`.
    """
    m, k, n, rows, cols, lanes, batch = (np.asarray(x, dtype=np.int64)
                                         for x in (m, k, n, rows, cols, drain_lanes, batch))
    tiles = batch * _ceil_div(m, rows) * _ceil_div(n, cols)
    a = rows + cols + MULTIPLIER_LATENCY + OPERAND_READ_LATENCY + 1
    drain = rows * cols // lanes
    d = drain + 1
    i0 = k - 1
    last = tiles - 1

    # Case k <= a: the next last beat may issue early (_early_copy).

    # Case k > a and d <= k: every step advances k, d_t stays a.
    copy_a1 = i0 + last * k + a

    # Case k > a and d > k: d_t = a + t(d-k) grows while d_t + 1 <= k (n1 steps of k), then one
    # step of d_{n1} + 1 and d_t = d - 1 with steps of d afterwards.
    grow = np.maximum(d - k, 1)
    n1 = (k - 1 - a) // grow + 1
    delta_n1 = a + n1 * (d - k)
    early = i0 + last * k + (a + last * (d - k))
    at_n1 = i0 + n1 * k + delta_n1
    after = i0 + n1 * k + delta_n1 + 1 + (last - n1 - 1) * d + (d - 1)
    copy_a2 = np.where(last < n1, early, np.where(last == n1, at_n1, after))

    copy = np.where(k <= a, _early_copy(k, last, rows, cols, a, drain),
                    np.where(d <= k, copy_a1, copy_a2))
    return (copy + drain + GEMM_TAIL_CYCLES +
            np.maximum(REQUANT_LATENCY - padded_tail_slots(m, n, rows, cols, lanes), 0))


def _early_copy(k, steps, rows, cols, to_copy, drain):
    """The last tile's copy time in :func:`gemm_cycles` when ``K <= to_copy`` (vectorized).

    Then the next last beat may issue early, and with ``f_t = x_{t-1} + D + 1 - c_t`` (when
    the drain is free, relative to the tile's last beat) the step to the next last beat is
    ``p_t = max(K, spacing, f_t + 1)`` while ``f_t < to_copy``, else ``f_t + 1``, and
    ``f_{t+1} = max(to_copy, f_t) + D + 1 - p_t``. Worked through case by case, the steps
    repeat with a period of one or two from the third on, so four are computed and the rest
    extrapolated.
    """
    spacing = np.maximum(rows + cols - 1, 2)
    q = np.maximum(k, spacing)
    f = np.full(np.broadcast(k, steps, rows, cols).shape, -(1 << 40), dtype=np.int64)
    fs, ps = [f], []
    for _ in range(6):
        p = np.where(f <= to_copy - 1, np.maximum(q, f + 1), f + 1)
        f = np.maximum(to_copy, f) + drain + 1 - p
        ps.append(p)
        fs.append(f)
    ps, fs = np.stack(ps), np.stack(fs)
    cumulative = np.concatenate([np.zeros((1,) + ps.shape[1:], dtype=np.int64),
                                 np.cumsum(ps, axis=0)])
    short = steps <= 6
    index = np.where(short, np.minimum(steps, 6), 0)
    rest = np.maximum(steps - 4, 0)
    total = np.where(short, np.take_along_axis(cumulative, index[None], 0)[0],
                     cumulative[4] + rest // 2 * (ps[4] + ps[5]) + rest % 2 * ps[4])
    f_last = np.where(short, np.take_along_axis(fs, index[None], 0)[0],
                      np.where(rest % 2 == 0, fs[4], fs[5]))
    return (k - 1) + total + np.maximum(to_copy, f_last)


# =============================================================================================
# Sparse attention kernel (gen/hw/attention) and integer softmax unit (gen/hw/softmax)
# =============================================================================================
# Both are exact: verif/test_attention.py checks every op of random and trained layers against
# Verilator's cycle count, verif/test_softmax.py and tests/test_softmax_unit.py the softmax rows.


#: The first group of a MAC op, and every group, lasts at least MIN_GROUP_CYCLES (3): the next
#: group's block pointer is read in a group's first cycle and registered (pmem's output) before
#: the group ends.
ATTENTION_FIRST_GROUP_CYCLES = MIN_GROUP_CYCLES
#: The lane drain's registers before a value reaches the requantizer: the copy of the sums into
#: the shift chain, the output register, and the registers it waits in for qmem's word.
ATTENTION_DRAIN_STAGES = 2 + DRAIN_PARAM_STAGES
#: The registered start to the parts, and after an op's last part goes idle: the two
#: registered idle stages and the finishing cycle (as in the GEMM engine).
ATTENTION_FINISH_CYCLES = JOB_START_LATENCY + 3
#: A softmax op beyond its rows' :func:`softmax_rows_cycles`: accept, the registered start,
#: first read, last write and the idle detection.
ATTENTION_SOFTMAX_OP_CYCLES = JOB_START_LATENCY + 6 + BANKED_READ_LATENCY


def softmax_row_cycles(n):
    """Cycles between consecutive rows of ``n`` scores through ``IntSoftmax`` in steady state
    (input always valid, output always ready): the slowest of its four overlapped stages.

    A stage takes its next row at the earliest on the cycle after it handed its last one on
    (its busy flag is a register): receive ``n`` and its handoff register; sum
    ``n + EXP_STAGES``, its handoff register and that cycle; divide ``QUOTIENT_BITS``
    likewise; emit ``n + EMIT_LATENCY`` and that cycle. That is ``max(n + 8, 19)``: 25 for
    ``n = 17`` (the rows did not overlap before: ``3 n + 28``).
    """
    free = 1        # the cycle a stage's busy flag takes to clear
    return max(n + SOFTMAX_HANDOFF_CYCLES,
               n + SOFTMAX_EXP_STAGES + SOFTMAX_HANDOFF_CYCLES + free,
               SOFTMAX_QUOTIENT_BITS + SOFTMAX_HANDOFF_CYCLES + free,
               n + SOFTMAX_EMIT_LATENCY + free)


def softmax_rows_cycles(rows, n):
    """Cycles of ``rows`` rows of ``n`` scores back to back through ``IntSoftmax`` (input
    always valid, output always ready), from the first score accepted to the cycle after the
    last probability transfers (0 rows: 0).

    The first row passes the four stages one after the other: its last probability leaves
    ``3 n + 30`` cycles after its first score (the rest of the receive, ``n - 1``, and its
    handoff register; the sum, ``n + EXP_STAGES``, and its handoff register; the divide,
    ``QUOTIENT_BITS``, and its handoff register; the emit, ``n + EMIT_LATENCY``), so one row
    takes ``3 n + 31`` (the count ends on the cycle after the last probability). Every later
    row adds :func:`softmax_row_cycles`: with every row of the same length the stages'
    recurrence (``verif.test_softmax.stage_model``, checked against Verilator) has no transient
    beyond the first row (``tests/test_softmax_unit.py`` checks the two agree).
    """
    if rows <= 0:
        return 0
    first = (3 * n + SOFTMAX_EXP_STAGES + SOFTMAX_QUOTIENT_BITS + SOFTMAX_EMIT_LATENCY +
             3 * SOFTMAX_HANDOFF_CYCLES)
    return first + (rows - 1) * softmax_row_cycles(n)


def attention_mac_op_cycles(steps, lanes, last_lanes=None, *, mac_latency=MAC_LANES_LATENCY,
                            write_latency=0):
    """Exact cycles (``cycles`` increments) of one MAC op (linear, scores, context).

    ``steps[g]`` is the beat count ``max(count, 1)`` of group ``g`` in issue order; ``lanes``
    is B; ``last_lanes`` (default B) how many lanes of the final group are written (columns
    ``< n_hi``). The last beat of a group waits B cycles after the previous group's (the
    drain's pace), the first group's at least :data:`ATTENTION_FIRST_GROUP_CYCLES`; then the
    tail: the operand stages, the MAC latency, the drain up to the last written lane, the
    requantizer, ``write_latency`` (an activation table's) and the result write register, or
    the drain of all B lanes if that ends later; then the completion detection.
    """
    steps = [max(1, int(s)) for s in steps]
    if not steps:
        raise ValueError("a MAC op has at least one group")
    b = int(lanes)
    last_lanes = b if last_lanes is None else int(last_lanes)
    written = last_lanes + ATTENTION_DRAIN_STAGES + REQUANT_LATENCY + 1 + int(write_latency)
    drained = b + ATTENTION_DRAIN_STAGES
    # The walk starts SEQUENCER_START_CYCLES after the parts' start; the first group's
    # term counts one of them.
    tail = (SEQUENCER_START_CYCLES - 1 + OPERAND_STAGES + mac_latency + max(written, drained) +
            ATTENTION_FINISH_CYCLES)
    pace = max(b, MIN_GROUP_CYCLES)
    return max(steps[0], ATTENTION_FIRST_GROUP_CYCLES) + sum(max(s, pace) for s in steps[1:]) + tail


def attention_softmax_op_cycles(rows, length):
    """Exact cycles of a softmax op over ``rows`` rows of ``length`` scores: the rows stream
    through the unit back to back (the reader's queue keeps its input valid, the writer is
    always ready), :func:`softmax_rows_cycles`, and :data:`ATTENTION_SOFTMAX_OP_CYCLES`."""
    return softmax_rows_cycles(rows, length) + ATTENTION_SOFTMAX_OP_CYCLES


# =============================================================================================
# Integer LayerNorm unit (gen/hw/vit/layernorm.py)
# =============================================================================================
# Exact: verif/test_vit_layernorm.py checks it against Verilator's count.


def layernorm_cycles(rows, dim):
    """Cycles of ``rows`` rows of ``dim`` elements through ``IntLayerNorm``, input always valid
    and output always ready: from the cycle the first element is accepted to the cycle the
    last output transfers (their difference; 0 rows: 0).

    Per row ``k`` (cycle numbers, the first acceptance at 0; terms of rows before 0 drop out):
    stage A takes the row's first element at ``F_k = max(L_{k-1} + 1, C_{k-2} + 2)`` (a free
    buffer entry: the ring of ``2 dim`` entries frees row ``k - 2``'s entries as they are read)
    and its last at ``L_k = max(F_k + dim - 1, T_{k-1} + 1)`` (the statistics slot is free);
    stage B takes the row at ``T_k = max(L_k + LN_INPUT_STAGES, H_{k-1} + 1)`` and hands it on
    at ``H_k = max(T_k + stats_cycles, C_{k-1} + 1)``; stage C loads it at
    ``C_k = max(H_k + 1, C_{k-1} + dim)`` and reads it in the ``dim`` cycles after; the last
    output transfers ``LN_EMIT_LATENCY`` cycles after the last read, at
    ``C_{rows-1} + dim + LN_EMIT_LATENCY``.

    When ``dim >= stats_cycles + 5`` (``dim >= 52``) nothing waits and this is
    ``(rows + 1) * dim + LN_INPUT_STAGES + stats_cycles + LN_EMIT_LATENCY``: one element
    per cycle.
    """
    from .hw.vit.layernorm import LN_EMIT_LATENCY, LN_INPUT_STAGES, ln_geometry
    rows, dim = int(rows), int(dim)
    if rows < 0:
        raise ValueError(f"rows is {rows}; it must be >= 0")
    if rows == 0:
        return 0
    stats = ln_geometry(dim).stats_cycles
    never = -(1 << 62)
    last = take = hand = never
    load = [never, never]                   # C_{k-2}, C_{k-1}
    for _ in range(rows):
        first = 0 if last == never else max(last + 1, load[0] + 2)
        last = max(first + dim - 1, take + 1)
        take = max(last + LN_INPUT_STAGES, hand + 1)
        hand = max(take + stats, load[1] + 1)
        load = [load[1], max(hand + 1, load[1] + dim)]
    return load[1] + dim + LN_EMIT_LATENCY


# -- ViT engines (gen.hw.vit, docs/vit.md section 3) --------------------------------------------

#: Engine cycles a step costs beyond its unit's own work: fetch, the program word's register
#: (``gen.hw.vit.engine.PROGRAM_WORD_STAGES``), decode and the step's start and finish
#: handshakes.
VIT_STEP_OVERHEAD = 4 + PROGRAM_WORD_STAGES


def vit_row_step_cycles(kind, *, rows, cols, lanes, dim=None, local=False):
    """Cycles of one row step of a ViT engine (a model: see ``benchmarks/bench_vit.py`` for
    its error against Verilator).

    ``"receive"``: the message streams in at one pair a cycle (``local``: read from amem, B
    elements per B + 2 cycles) through the residual adder, a queue, the LayerNorm and a queue;
    ``"send"``: amem rows out, B elements per B + 2 cycles; ``"image"``: one pixel a cycle;
    ``"result"``: one word of logits.
    """
    from .hw.vit.layernorm import LN_EMIT_LATENCY, LN_INPUT_STAGES, ln_geometry
    from .hw.vit.residual import RESIDUAL_LATENCY
    from .hw.vit.engine import (KERNEL_LOAD_LATENCY, MESSAGE_QUEUE_LATENCY,
                                READ_ADDRESS_LATENCY, SKID_LATENCY, UNIT_START_LATENCY,
                                UNITS_IDLE_LATENCY)
    words = -(-int(cols) // int(lanes))
    paired = rows * words * (lanes + 2) + READ_ADDRESS_LATENCY
    overhead = VIT_STEP_OVERHEAD + UNIT_START_LATENCY + UNITS_IDLE_LATENCY
    if kind == "receive":
        ln = layernorm_cycles(rows, dim)
        if local:
            tail = dim + LN_INPUT_STAGES + ln_geometry(dim).stats_cycles + LN_EMIT_LATENCY
            ln = max(ln, paired + tail)
        queue = 0 if local else MESSAGE_QUEUE_LATENCY
        return ln + RESIDUAL_LATENCY + 2 * SKID_LATENCY + KERNEL_LOAD_LATENCY + queue + overhead
    if kind == "send":
        return paired + overhead
    if kind == "image":
        return rows * cols + KERNEL_LOAD_LATENCY + overhead
    if kind == "result":
        return words * (lanes + 1) + 2 + READ_ADDRESS_LATENCY + overhead
    raise ValueError(f"unknown ViT step kind {kind!r}")
