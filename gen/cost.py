"""Analytic cost model: one operation on one engine configuration, vectorized.

Every function takes numpy arrays that broadcast against each other (typically layers of shape
``(L,)`` against engine choices of shape ``(P, 1)`` or ``(P, L)``) and returns arrays of the
broadcast shape, so one call scores a whole population of allocations. The search in
:mod:`gen.alloc` never sees these functions; :mod:`gen.alloc.problems` wraps them as objectives.

Dataflows
---------
``accelgen_os``
    The generator's own engine (``gen/hw/gemm.py``): an output-stationary R x C systolic array
    running the im2col GEMM of the layer in jobs that fit its buffers. Its cycles are exact: the
    closed form of the per-tile recurrence of :func:`gen.cycles.gemm_cycles` (the same
    numbers, checked in ``tests/test_cost.py``), which is itself equal to Verilator's count
    (``verif/test_gemm_accelerator.py``, ``python -m gen cost-report``). The generated engine does
    not overlap host transfers with compute: latency = compute + traffic / bandwidth.
``accelgen_ws``
    The generator's weight-stationary engine (``gen/hw/ws_gemm.py``), exact in the same way:
    :func:`gen.cycles.ws_gemm_cycles` per job (vectorized), jobs split to fit its buffers (its
    activation buffer holds ``ceil(K/R) * M`` words: K padded, M not).
``ws`` (NVDLA-like weight stationary), ``rs`` (Eyeriss-like row stationary), ``os``
    (ShiDianNao-like output stationary)
    Classic dataflows for comparison, in the manner of MAESTRO's first-order model (Kwon et al.,
    MICRO 2019) that ConfuciuX scores with: the same R x C multipliers, the dataflow decides which
    loop dimensions map to rows and columns (and hence the spatial utilization), a fill/drain cost
    per tile, and double-buffered transfers: latency = max(compute, traffic / bandwidth).

Constants (all stated here, with their source)
----------------------------------------------
Energy is in picojoules of a 45 nm ASIC, the common currency of the dataflow literature, not
FPGA joules: ``E_MAC`` = 0.2 pJ 8-bit multiply + 0.1 pJ 32-bit add (Horowitz, "Computing's
energy problem", ISSCC 2014, table of 45 nm operations); register file, on-chip buffer and
off-chip access cost 1x, 6x and 200x a MAC (Chen, Emer, Sze, "Eyeriss", ISCA 2016, fig. 3's
normalized energies). Power = static + energy / time; ``STATIC_MW`` is the ECP5-85F's
quiescent core power as a round figure (Lattice ECP5 power calculator ballpark: ~100 mW).
Host link of the generated design (``accelgen_os``): its only link is the UART of
``gen/host/PROTOCOL.md``, 8N1, so ``uart_bytes_per_second(baud) = baud / 10``; the bytes are
exactly what ``gen/host/driver.py`` sends per job (operands padded to whole row/column tiles,
9-byte parameter words, the INT8 outputs, and ``PROTOCOL_BYTES_PER_JOB`` of commands and replies).
``SDRAM_BYTES_PER_CYCLE`` = 2 (the ULX3S's 16-bit SDRAM at the accelerator clock) is a
what-if: the generated design has no memory controller; the classic dataflows and the
layer-pipelined report assume it.
Resources come from :mod:`gen.estimate` (fitted to nextpnr; see its calibration points).
"""

import numpy as np

from .errors import UserError
from .cycles import gemm_cycles_closed_form as engine_gemm_cycles
from .cycles import ws_gemm_cycles
from .hw.ws_gemm import WS_MIN_ROWS
from . import estimate

__all__ = ["DATAFLOWS", "E_MAC", "E_RF", "E_BUFFER", "E_OFFCHIP", "STATIC_MW",
           "SDRAM_BYTES_PER_CYCLE", "PROTOCOL_BYTES_PER_JOB", "uart_bytes_per_second",
           "uart_bytes_per_cycle", "engine_gemm_cycles", "engine_resources", "layer_cost",
           "check_dataflow"]

DATAFLOWS = {
    "accelgen_os": "the generated output-stationary systolic engine (exact)",
    "accelgen_ws": "the generated weight-stationary systolic engine (exact)",
    "ws": "weight stationary, NVDLA-like (reduction on rows, output channels on columns)",
    "rs": "row stationary, Eyeriss-like (filter rows on rows, output rows on columns)",
    "os": "output stationary, ShiDianNao-like (output pixels on rows x columns)",
}

E_MAC = 0.3                 # pJ, Horowitz ISSCC 2014 (8b mult 0.2 + 32b add 0.1)
E_RF = 1.0 * E_MAC          # Eyeriss ISCA 2016 normalized energies: RF 1x,
E_BUFFER = 6.0 * E_MAC      # global buffer 6x,
E_OFFCHIP = 200.0 * E_MAC   # DRAM 200x (per byte-wide access)
STATIC_MW = 100.0
SDRAM_BYTES_PER_CYCLE = 2.0
#: Per job, besides the operands and results: three WRITE headers (10 bytes) and their replies
#: (1), START (7 + 1), one STATUS (1 + 2), CYCLES (1 + 5) and the READ header (10 + 1).
PROTOCOL_BYTES_PER_JOB = 3 * 11 + 8 + 3 + 6 + 11


def uart_bytes_per_second(baud):
    """Payload bytes per second of an 8N1 UART (a start bit, 8 data bits, a stop bit)."""
    return baud / 10


def uart_bytes_per_cycle(baud, clock_mhz):
    """The UART's bytes per accelerator cycle."""
    return uart_bytes_per_second(baud) / (clock_mhz * 1e6)

# Bytes of per-output-channel parameters in the engine: bias 4, multiplier 4, shift 1.
PARAM_BYTES = 9


def check_dataflow(name):
    if name not in DATAFLOWS:
        import difflib
        close = difflib.get_close_matches(name, DATAFLOWS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown dataflow {name!r}{hint}; known: {', '.join(DATAFLOWS)}")
    return name


def _cdiv(a, b):
    return -(-a // b)


#: Resources of engine configurations, vectorized (the estimate `gen build` checks).
engine_resources = estimate.resource_arrays


def _gemm_view(layers):
    return (np.asarray(layers["M"], dtype=np.int64), np.asarray(layers["K"], dtype=np.int64),
            np.asarray(layers["N"], dtype=np.int64), np.asarray(layers["count"], dtype=np.int64))


def _split_jobs(m, k, n, rows, cols, act_depth, wgt_depth, param_depth, out_depth):
    """How the runtime splits a GEMM into jobs that fit the engine's buffers (K is never split:
    the engine requantizes at the end of the reduction). Returns (feasible, mc, nc)."""
    feasible = (k <= act_depth) & (k <= wgt_depth) & (rows <= out_depth) & (cols <= out_depth)
    safe_k = np.maximum(k, 1)
    nc = np.minimum(n, np.minimum((wgt_depth // safe_k) * cols, param_depth))
    nc = np.maximum(nc, 1)
    mc_out = out_depth // nc
    mc = np.minimum(m, np.minimum((act_depth // safe_k) * rows, mc_out))
    # Keep whole row tiles when the buffer allows more than one.
    mc = np.where((mc < m) & (mc >= rows), mc - mc % rows, mc)
    return feasible & (mc >= 1), np.maximum(mc, 1), nc


def _split_jobs_ws(m, k, n, rows, cols, act_depth, wgt_depth, param_depth, out_depth):
    """As :func:`_split_jobs` for the weight-stationary engine, whose activation buffer holds
    ``ceil(K/R)`` words per row of A. Returns (feasible, mc, nc)."""
    k_tiles = _cdiv(k, rows)
    feasible = ((k_tiles <= act_depth) & (k <= wgt_depth) & (cols <= out_depth) &
                (rows >= WS_MIN_ROWS))
    safe_k = np.maximum(k, 1)
    nc = np.maximum(np.minimum(n, np.minimum((wgt_depth // safe_k) * cols, param_depth)), 1)
    mc = np.minimum(m, np.minimum(act_depth // np.maximum(k_tiles, 1), out_depth // nc))
    return feasible & (mc >= 1), np.maximum(mc, 1), nc


def _jobs_cycles(m, k, n, mc, nc, rows, cols, lanes=1, job_cycles=None):
    """Sum of the exact job cycles over a grid of full and remainder jobs."""
    job_cycles = job_cycles or engine_gemm_cycles
    jm_full, m_rem = m // mc, m % mc
    jn_full, n_rem = n // nc, n % nc
    total = np.zeros(np.broadcast(m, k, n, mc, nc, rows, cols).shape, dtype=np.int64)
    for jm, mm in ((jm_full, mc), (m_rem > 0, m_rem)):
        for jn, nn in ((jn_full, nc), (n_rem > 0, n_rem)):
            count = np.asarray(jm, dtype=np.int64) * np.asarray(jn, dtype=np.int64)
            cyc = job_cycles(np.maximum(mm, 1), k, np.maximum(nn, 1), rows, cols, lanes)
            total = total + np.where(count > 0, count * cyc, 0)
    jobs = (jm_full + (m_rem > 0)) * (jn_full + (n_rem > 0))
    return total, jobs


def layer_cost(layers, engine, dataflow="accelgen_os", *, clock_mhz=100.0,
               link_bytes_per_cycle=SDRAM_BYTES_PER_CYCLE):
    """Cost of each layer on each engine configuration.

    Parameters
    ----------
    layers : mapping of arrays
        At least ``M, K, N, count`` (the im2col GEMM view, :meth:`gen.workloads.Workload.as_arrays`)
        and, for ``rs``/``os``, ``out_h, out_w, kernel_h`` too.
    engine : mapping of arrays
        ``rows, cols, act_depth, wgt_depth, param_depth, out_depth`` (buffer depths in words as in
        a design config) and optionally ``drain_lanes`` (default 1); for the classic dataflows ``buffer_bytes`` (on-chip capacity) instead
        of the depths.

    link_bytes_per_cycle : float
        The host / off-chip link. For ``accelgen_os`` pass the design's real link
        (:func:`uart_bytes_per_cycle`); the default is the SDRAM what-if.

    Returns a dict of arrays: ``compute_cycles``, ``cycles`` (latency in cycles with transfers),
    ``traffic_bytes`` (off-chip / host), ``buffer_bytes`` (on-chip bytes the layer needs to run
    without splitting), ``energy_pj``, ``feasible`` (the layer can run on this engine), ``jobs``.
    """
    check_dataflow(dataflow)
    m, k, n, count = _gemm_view(layers)
    rows = np.asarray(engine["rows"], dtype=np.int64)
    cols = np.asarray(engine["cols"], dtype=np.int64)
    macs = m * k * n * count
    a_bytes, w_bytes, o_bytes = m * k, k * n, m * n
    needed = _cdiv(m, rows) * rows * k + _cdiv(n, cols) * cols * k + m * n + n * PARAM_BYTES

    if dataflow in ("accelgen_os", "accelgen_ws"):
        weight_stationary = dataflow == "accelgen_ws"
        act, wgt = engine["act_depth"], engine["wgt_depth"]
        par, out = engine["param_depth"], engine["out_depth"]
        split = _split_jobs_ws if weight_stationary else _split_jobs
        feasible, mc, nc = split(m, k, n, rows, cols, act, wgt, par, out)
        lanes = np.asarray(engine.get("drain_lanes", 1), dtype=np.int64)
        compute, jobs = _jobs_cycles(m, k, n, mc, nc, rows, cols, lanes,
                                     job_cycles=ws_gemm_cycles if weight_stationary else None)
        compute = compute * count
        jm, jn = _cdiv(m, mc), _cdiv(n, nc)
        # What the driver sends: every job writes its A chunk, W chunk and parameters (padded
        # as the buffers hold them: M to whole row tiles, or for weight-stationary K to whole
        # weight tiles) and reads its outputs.
        a_padded = (_cdiv(k, rows) * rows * m if weight_stationary else
                    _cdiv(m, rows) * rows * k)
        w_padded = _cdiv(n, cols) * cols * k
        traffic = (a_padded * jn + w_padded * jm + o_bytes + n * PARAM_BYTES * jm +
                   jm * jn * PROTOCOL_BYTES_PER_JOB) * count
        cycles = compute + np.ceil(traffic / link_bytes_per_cycle).astype(np.int64)
        if weight_stationary:
            # Each pass reads its weight tile once and its chunk's rows of A once.
            passes = _cdiv(k, rows) * _cdiv(nc, cols) * jm * jn
            buffer_reads = passes * (rows * cols + np.minimum(mc, m) * rows) * count
        else:
            tiles = _cdiv(mc, rows) * _cdiv(nc, cols) * jm * jn
            buffer_reads = tiles * k * (rows + cols) * count
    else:
        capacity = np.asarray(engine["buffer_bytes"], dtype=np.int64)
        compute, buffer_reads = _classic_compute(dataflow, layers, m, k, n, count, rows, cols)
        # Half the buffer holds a weight block K x nc, the other half streams activations;
        # a reduction longer than that spills INT32 partial sums (read and written back).
        half = np.maximum(capacity // 2, 1)
        k_splits = _cdiv(k, half)
        nc = np.clip(half // np.minimum(k, half), 1, n)
        traffic = (a_bytes * _cdiv(n, nc) + w_bytes + o_bytes +
                   8 * o_bytes * (k_splits - 1)) * count
        feasible = capacity >= 1
        jobs = _cdiv(n, nc) * count
        cycles = np.maximum(compute, np.ceil(traffic / link_bytes_per_cycle).astype(np.int64))
    energy = (macs * (E_MAC + 2 * E_RF) + buffer_reads * E_BUFFER + o_bytes * count * E_BUFFER
              + traffic * E_OFFCHIP)
    shape = np.broadcast(cycles, feasible).shape
    return {
        "macs": np.broadcast_to(macs, shape),
        "compute_cycles": np.broadcast_to(compute, shape),
        "cycles": np.broadcast_to(cycles, shape),
        "traffic_bytes": np.broadcast_to(traffic, shape),
        "buffer_bytes": np.broadcast_to(needed, shape),
        "energy_pj": np.broadcast_to(energy, shape),
        "feasible": np.broadcast_to(feasible, shape),
        "jobs": np.broadcast_to(jobs, shape),
    }


def _classic_compute(dataflow, layers, m, k, n, count, rows, cols):
    """Compute cycles and on-chip buffer reads of the classic dataflows.

    ws: reduction (K) on rows, output channels (N) on columns; each weight tile stays while the
        M activation vectors stream through: ceil(K/R)*ceil(N/C)*(M + R + C) cycles.
    os: output pixels (M) on the whole array (R*C of them at once), one output channel at a
        time, reduction in time: ceil(M/(R*C)) * N * (K + R + C).
    rs: filter rows (kernel_h) on rows, replicated over input channels, output rows on
        columns, replicated over output channels (Eyeriss's folding); the rest in time.
    """
    if dataflow == "ws":
        tiles = _cdiv(k, rows) * _cdiv(n, cols)
        cycles = tiles * (m + rows + cols)
        reads = tiles * (rows * cols + m * rows)
    elif dataflow == "os":
        tiles = _cdiv(m, rows * cols) * n
        cycles = tiles * (k + rows + cols)
        reads = tiles * k * (rows * cols + 1)
    else:
        kh = np.asarray(layers.get("kernel_h", 1), dtype=np.int64)
        out_h = np.asarray(layers.get("out_h", m), dtype=np.int64)
        # Rows hold filter rows, replicated over input channels when the filter is shorter
        # than the array; columns hold output rows, replicated over output channels.
        kh = np.maximum(kh, 1)
        c_in = np.maximum(k // np.maximum(kh * kh, 1), 1)
        used_rows = np.where(kh <= rows, kh * np.minimum(np.maximum(rows // kh, 1), c_in), rows)
        oh = np.minimum(np.maximum(out_h, 1), cols)
        used_cols = oh * np.minimum(np.maximum(cols // oh, 1), n)
        pes_used = used_rows * used_cols
        cycles = _cdiv(m * k * n, pes_used) + _cdiv(k * n, rows * cols) * (rows + cols)
        reads = m * k + k * n + _cdiv(m * k * n, used_rows)
    return cycles * count, reads * count
