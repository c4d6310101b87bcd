"""Sparse INT8 attention kernel: one B-lane MAC structure runs every product of an encoder layer.

See ``docs/sparse_attention.md`` (sections 3-6) for the data it consumes. The host loads weight
words, block pointers, requantization parameters and activations into on-chip memories through
the ``load`` stream, then issues one descriptor per op on the ``desc`` stream; results are read
back through ``rd_addr``/``rd_data``. Ops run one at a time; ``busy`` is high while one runs and
``done`` pulses when it has written its last value.

Memories (all :class:`amaranth.lib.memory.Memory`, synchronous reads)
---------------------------------------------------------------------

Each memory is cut into fixed regions when the kernel is generated; the properties
``wmem_map``, ``pmem_map``, ``qmem_map`` and ``amem_map`` of its :class:`AttentionGeometry`
(``kernel.geometry``) give their bases:

* wmem: ``q, k, v, o, fc1, fc2`` (``capacity[name]`` words each), then ``features`` (D entries:
  the kept-feature lists of all heads) and ``keys`` (T entries);
* pmem: ``ceil(N / B)`` block pointers per matrix, same order;
* qmem: N parameter words per matrix, same order, then ``extra`` (scores, context);
* amem: ``x, q, kt, v, s, p, o, z, x2, h, f`` (X, Q, K^T, V, one head's S and P, the context O,
  Z = O Wo, the host's LN2 output X2, H = relu(X2 W1), F = H W2).

``wmem`` (target 0), word :class:`WeightWord`: ``value`` (B bytes, byte ``l`` = lane ``l``),
``word`` and ``lane`` (the inner index ``k`` as ``k // B`` and ``k % B``).

* A compressed matrix: for each column block ``c`` its kept rows ``k`` in order, ``value`` =
  ``W[k, c*B : c*B + B]`` (zero past ``N``).
* An index list (scores, context): one entry per inner index ``k`` (a kept feature ``f`` of a
  head, or a key ``j``); ``value`` holds the word offset of row ``k`` of the per-lane operand
  (``k * stride`` of K^T or V), the bytes are not multiplied.

``pmem`` (target 1), word :class:`BlockPointer`: ``start`` (wmem address of block ``c``'s first
word) and ``count`` (its kept rows, 0 for a fully pruned block).

``qmem`` (target 2), word :class:`~gen.hw.requant.RequantParams` (bias, M, S).

``amem`` (target 3), ``8*B`` bits: activations, B byte lanes. A matrix of ``R x C`` INT8 values
is stored row-major with a row stride of ``ceil(C / B)`` words (C the generated maximum):
element ``(r, e)`` at word ``base + r*stride + e // B``, byte lane ``e % B``. K is stored
transposed (K^T, ``D x T``) so that the scores' per-lane words are rows of K^T.
``gen.hw.attention_layout`` builds the images and the descriptor program of a layer.

Load stream ``load``: ``{target, addr, data}``; ``data`` holds the memory word in its low bits
(for wmem: ``value``, then ``word``, then ``lane``, least significant first, as in the layouts).
Accepted only while no op runs. Read stream ``rd_addr`` -> ``rd_data``: one amem word per
address, in order, served while no op runs (up to 8 results queue under back-pressure).
Loads and reads have priority over ``desc``: a descriptor is taken only when neither is offered
and no read result waits, so a host that loads, starts an op, waits for ``done`` and reads sees
program order.

Descriptor (:class:`Descriptor`, one op each)
---------------------------------------------

``op``
    0 linear, 1 scores, 2 softmax, 3 context.
``rows``
    Output rows ``M`` (tokens). An op with ``rows == 0``, ``c_hi <= c_lo`` (MAC ops) or
    ``n_hi == 0`` (softmax) does nothing but pulse ``done``.
``c_lo``, ``c_hi``
    Column blocks ``[c_lo, c_hi)`` to compute (B output columns each, block ``c`` = columns
    ``c*B .. c*B + B - 1``); ``n_lo``, ``n_hi``: only output columns in ``[n_lo, n_hi)`` are
    written (a head's slice of V, or T keys out of a padded block).
``a_base``, ``a_stride``
    Broadcast operand (X, Q or P; softmax: S) in amem: row ``i`` starts at ``a_base + i*a_stride``.
``b_base``
    scores / context: per-lane operand base (K^T or V); block ``c`` of inner index ``k`` is read
    at ``b_base + offset(k) + c`` (``offset`` from the index list).
``ptr_base``
    linear: pmem address of block 0 of the matrix (the *matrix id* resolves to it).
``list_base``, ``list_len``
    scores / context: the index list in wmem (kept features of the head, or keys 0..T-1).
``q_base``, ``per_channel``
    Requantization: parameters ``qmem[q_base + n]`` for output column ``n`` if ``per_channel``
    (linear), else ``qmem[q_base]`` for all (the *requant selection* of scores and context).
``relu``
    Write ``max(value, 0)``.
``transpose``
    Write output ``(i, n)`` to row ``n``, column ``i`` (K^T); needs ``c_lo == 0``.
``o_base``, ``o_stride``
    Output matrix in amem (softmax: P, with ``n_hi`` = row length).

The head of a scores / context op is implied by its index list and column range.

Timing of a MAC op (linear, scores, context)
--------------------------------------------

Groups ``g`` = (row ``i``, block ``c``) in row-major order take ``s_g = max(count, 1)`` beats
(a fully pruned block sends one beat with a zero operand so that its bias is still written).
The drain takes B cycles per group, so the last beat of a group waits until B cycles after the
previous group's last beat: the op takes ``max(s_0, 2) + sum_{g >= 1} max(s_g, B) +
mac_latency + tail`` cycles (``tail`` = B + 23 when the last group's lanes are all written;
exactly :func:`gen.cycles.attention_mac_op_cycles`, or
:meth:`AttentionGeometry.mac_op_cycles`). With one requantizer draining one value per cycle, a
group cannot finish faster than its B outputs: pruning a block below B words (or a head below
B features) saves no further cycles. A softmax op of R rows of n scores takes
``softmax_rows_cycles(R, n)`` (the unit overlaps its rows: ``3 n + 31`` for the first, then a row
every ``max(n + 8, 19)``) plus ``ATTENTION_SOFTMAX_OP_CYCLES``
(:func:`gen.cycles.attention_softmax_op_cycles`, or :meth:`AttentionGeometry.softmax_op_cycles`).

Every block RAM output is registered before any logic uses it (ECP5 block RAM's clock-to-output
is 5.83 ns): wmem and amem are banked (512 words per bank), each bank's output registered three
times (``BANKED_READ_LATENCY``, 4-cycle reads: the block RAM's own output register, one beside
it, one before the bank multiplexer), and the operand pipeline has ``OPERAND_STAGES`` (11)
stages from a beat to the MAC structure.

On ECP5 the banks are DP16KD instances read through their output register
(:class:`~gen.hw.attention.memory.BlockRamBank`), whose read of a word in the cycle it is
written is undefined. No result depends on one: the host writes wmem, pmem, qmem and amem
only while no op runs (the MAC path's idle reads of wmem are dropped with their beats); an op
writes an amem region it does not read, and the next op starts after its last write; the ViT
engines' row moves through the host port write another region than they read, or a residual
sum back into its row several cycles after reading it. The
simulation model of a bank returns all ones for such a read, and the bit-exact tests (random
ops here, whole images in ``verif/test_vit_system.py``) pass with it.

Components
----------

:class:`AttentionGeometry` (``geometry.py``) is the kernel without hardware: sizes, word
formats, memory map, multipliers and cycle model; the host side (``gen.hw.attention_layout``),
the benchmarks and the tests use it alone. :class:`SparseAttentionKernel` (``kernel.py``) joins:

* :class:`OpControl`: takes one descriptor at a time; start, busy, done, cycle count
  (``control.py``);
* :class:`HostPort`: the ``load`` stream into the four memories, ``rd_addr`` / ``rd_data``
  through a read queue (``control.py``);
* :class:`BankedMemory` (wmem, qmem), a plain memory (pmem) and :class:`ActivationMemory`
  (amem and who uses its ports when) (``memory.py``);
* the MAC path (``mac.py``): :class:`MacSequencer` (groups and beats, block pointers),
  :class:`MacDatapath` (operand pipeline and :class:`~gen.hw.mac_lanes.MacLanes`), a FIFO of
  group tags, :class:`LaneDrain` (sums into the :class:`~gen.hw.requant.Requantizer`) and
  :class:`ResultWriter` (ReLU, amem bytes);
* the softmax path (``softmax_path.py``): :class:`SoftmaxReader` (S rows through a queue),
  :class:`~gen.hw.softmax.IntSoftmax` and :class:`SoftmaxWriter` (P rows).

Components pass work as ``amaranth.lib.stream`` transfers with ``amaranth.lib.data`` payloads;
the MAC path has no back-pressure (``always_ready`` streams): the sequencer paces the groups
so that the drain keeps up.
"""

from ..softmax import SOFTMAX_MULTIPLIERS
from .control import HostPort, OpControl, PartsBusy
from .geometry import (MATRICES, OP_CONTEXT, OP_LINEAR, OP_SCORES, OP_SOFTMAX, TARGET_AMEM,
                       TARGET_PMEM, TARGET_QMEM, TARGET_WMEM, AttentionGeometry, BlockPointer,
                       Descriptor, WeightWord, as_geometry)
from .kernel import SparseAttentionKernel
from .mac import (OPERAND_STAGES, Beat, GroupTag, LaneDrain, MacDatapath, MacSequencer, ResultTag,
                  ResultWriter)
from .memory import QUEUE_DEPTH, ActivationMemory, BankedMemory, ByteWrite
from .softmax_path import SoftmaxReader, SoftmaxWriter

__all__ = ["OP_LINEAR", "OP_SCORES", "OP_SOFTMAX", "OP_CONTEXT", "MATRICES",
           "TARGET_WMEM", "TARGET_PMEM", "TARGET_QMEM", "TARGET_AMEM", "SOFTMAX_MULTIPLIERS",
           "OPERAND_STAGES", "QUEUE_DEPTH",
           "WeightWord", "BlockPointer", "Descriptor", "Beat", "GroupTag", "ResultTag",
           "ByteWrite", "PartsBusy", "AttentionGeometry", "as_geometry",
           "SparseAttentionKernel", "OpControl", "HostPort", "BankedMemory", "ActivationMemory",
           "MacSequencer", "MacDatapath", "LaneDrain", "ResultWriter",
           "SoftmaxReader", "SoftmaxWriter"]
