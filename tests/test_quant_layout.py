"""Host-side numeric contract and buffer layout."""

import numpy as np
import pytest

from gen.host.layout import (LayoutError, check_gemm_operands, pack_activations, pack_params,
                             pack_weights)
from gen.numeric import gemm_int8, multiplier_and_shift, requantize


def test_requantize_rounds_half_up_and_saturates():
    # (acc*M + 2^(S-1)) >> S with an arithmetic shift: ties go up (towards +inf).
    assert requantize(3, 1, 1) == 2          # 1.5 -> 2
    assert requantize(-3, 1, 1) == -1        # -1.5 -> -1
    assert requantize(5, 1, 2) == 1          # 1.25 -> 1
    assert requantize(10 ** 6, 2 ** 30, 31) == 127
    assert requantize(-(10 ** 6), 2 ** 30, 31) == -128


def test_requantize_extremes_stay_in_int64():
    acc = np.array([-(2 ** 31), 2 ** 31 - 1])
    out = requantize(acc, 2 ** 31 - 1, 62)
    # |acc * M| < 2^62, so the result is exact: round(acc * M / 2^62).
    expected = [int(np.floor((a * (2 ** 31 - 1) + 2 ** 61) / 2 ** 62)) for a in acc.tolist()]
    assert out.tolist() == expected


def test_multiplier_and_shift_approximates_the_scale():
    for scale in (1e-5, 0.0123, 0.5, 1.0, 3.7, 1000.0):
        mult, shift = multiplier_and_shift(scale)
        assert 0 <= mult < 2 ** 31 and 1 <= shift <= 62
        assert abs(mult / 2 ** shift - scale) / scale < 1e-6


def test_gemm_int8_matches_float_reference_when_exact():
    a = np.array([[1, 2], [3, 4]])
    w = np.array([[5, 6], [7, 8]])
    # M / 2^S = 1: the requantized value is the accumulator itself (when inside INT8).
    y = gemm_int8(a, w, [0, 1], 1 << 20, 20)
    assert y.tolist() == [[19, 23], [43, 51]]


def test_activation_words_hold_a_column_of_a_tile():
    a = np.arange(-10, 5).reshape(5, 3)            # M=5, K=3
    words = pack_activations(a, rows=2)            # 3 row tiles x K=3 words, 2 bytes each
    assert len(words) == 9
    # Word mt*K + k, byte r = A[mt*2 + r, k]; row 5 is padding (zero).
    for mt in range(3):
        for k in range(3):
            word = np.frombuffer(words[mt * 3 + k], dtype=np.int8)
            for r in range(2):
                m = mt * 2 + r
                assert word[r] == (a[m, k] if m < 5 else 0)


def test_weight_words_hold_a_row_of_a_tile():
    w = np.arange(12).reshape(3, 4) - 6            # K=3, N=4
    words = pack_weights(w, cols=3)                # 2 column tiles x K words, 3 bytes each
    assert len(words) == 6
    for nt in range(2):
        for k in range(3):
            word = np.frombuffer(words[nt * 3 + k], dtype=np.int8)
            for c in range(3):
                n = nt * 3 + c
                assert word[c] == (w[k, n] if n < 4 else 0)


def test_param_words():
    words = pack_params([-1, 5], [2 ** 31 - 1, 0], [62, 1])
    assert words[0] == b"\xff\xff\xff\xff" + b"\xff\xff\xff\x7f" + bytes([62])
    assert words[1] == (5).to_bytes(4, "little") + bytes(4) + bytes([1])


@pytest.mark.parametrize("change, message", [
    (dict(a=np.full((2, 3), 128)), "A holds values outside INT8"),
    (dict(w=np.zeros((4, 2), dtype=np.int64)), "inner sizes must agree"),
    (dict(a=np.zeros((2, 3))), "A must hold integers"),
    (dict(mult=2 ** 31), r"mult must lie in \[0, 2147483647\]"),
    (dict(shift=0), r"shift must lie in \[1, 62\]"),
    (dict(bias=2 ** 31 - 10), "may overflow the INT32 accumulator"),
])
def test_bad_operands_are_refused_before_sending(change, message):
    args = dict(a=np.zeros((2, 3), dtype=np.int64), w=np.zeros((3, 2), dtype=np.int64),
                bias=0, mult=1, shift=1)
    args.update(change)
    with pytest.raises(LayoutError, match=message):
        check_gemm_operands(**args)
