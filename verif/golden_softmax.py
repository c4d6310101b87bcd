"""Integer softmax: THE definition (docs/sparse_attention.md, section 5), and a float reference.

Written from the specification alone: nothing here imports the generator. All arithmetic is
plain torch int64 and every result is compared with the RTL (`gen/hw/softmax.py`) by equality.

Definition
----------
For one row of INT8 scores ``s_0 .. s_{n-1}`` (``n >= 1``), where a score ``s`` means ``s / 16``
in log2 units (the attention requantization folds ``log2(e)`` into the scores)::

    m     = max_j s_j
    t_j   = m - s_j                       # 0 .. 255
    q_j   = t_j >> 4                      # integer part of the log2 distance, 0 .. 15
    f_j   = t_j & 15                      # fraction in 1/16
    e_j   = EXP2_LUT[f_j] >> q_j          # EXP2_LUT[f] = round(2^15 * 2^(-f/16))
    sum   = sum_j e_j                     # >= 32768 (the maximum contributes 2^15)
    r     = floor(2^31 / sum)             # one division per row, r <= 2^16
    p_j   = min((e_j * r + 2^23) >> 24, 127)

``p_j`` is UINT7 and means ``p_j / 128``.

Error bound against the float reference
---------------------------------------
``P_j = 128 * 2^(s_j/16) / sum_k 2^(s_k/16)`` (`float_reference`). With ``x_j = 2^(-t_j/16)``,
``X = sum x_j >= 1`` and ``a = 2^15``:

* table and shift: ``EXP2_LUT[f] = a 2^(-f/16) + d`` with ``|d| <= 1/2``, so
  ``e_j = floor((a x_j 2^q + d) / 2^q) = a x_j + eps_j`` with ``|eps_j| <= 5/4``
  (``eps = d`` when ``q = 0``; ``d/2^q - frac`` in ``(-5/4, 1/4]`` otherwise);
* ``E = sum e_j >= a``; ``|e_j/E - x_j/X| = |X eps_j - x_j sum eps| / (X E)
  <= (5/4)(1 + n) / a`` (using ``x_j <= X``);
* ``r = 2^31/E - rho`` with ``0 <= rho < 1``, so ``e_j r / 2^24 = 128 e_j/E - e_j rho/2^24``
  and ``e_j rho / 2^24 < 2^15 / 2^24 = 1/512``;
* rounding to an integer adds at most ``1/2``.

Hence the unclamped value is within ``B(n) = 1/2 + 1/512 + 5 (n + 1) / 1024`` of ``P_j``. The
clamp to 127 only acts on a rounded 128, where ``P_j <= 128`` moves the error by at most 1, so

    |p_j - P_j| <= max(1, B(n))          (`error_bound`; 1 LSB for rows of up to 101 scores)
"""

import torch

__all__ = ["EXP2_LUT", "int_softmax", "float_reference", "error_bound", "P_MAX"]

#: ``round(2^15 * 2^(-f/16))`` for ``f = 0 .. 15``, as written in the specification.
EXP2_LUT = (32768, 31379, 30048, 28774, 27554, 26386, 25268, 24196,
            23170, 22188, 21247, 20347, 19484, 18658, 17867, 17109)
#: Largest output value (UINT7).
P_MAX = 127


def int_softmax(scores):
    """Row-wise integer softmax of INT8 ``scores`` (shape ``(..., n)``, ``n >= 1``).

    Returns an int64 tensor of the same shape with values in ``0 .. 127`` (``p * 128``),
    exactly per the definition in this module's docstring. Leading dimensions are independent
    rows. Raises ``ValueError`` for an empty row or a score outside ``[-128, 127]``.
    """
    s = torch.as_tensor(scores).to(torch.int64)
    if s.dim() == 0 or s.shape[-1] == 0:
        raise ValueError("a softmax row needs at least one score")
    if ((s < -128) | (s > 127)).any():
        raise ValueError("scores must be INT8 (-128 .. 127)")
    lut = torch.tensor(EXP2_LUT, dtype=torch.int64)
    m = s.amax(dim=-1, keepdim=True)
    t = m - s
    q = t >> 4
    f = t & 15
    e = lut[f] >> q
    total = e.sum(dim=-1, keepdim=True)
    r = (2 ** 31) // total
    return torch.clamp((e * r + 2 ** 23) >> 24, max=P_MAX)


def float_reference(scores):
    """``128 * softmax`` in base 2 of ``scores / 16`` (float64), the value `int_softmax` approximates."""
    s = torch.as_tensor(scores).to(torch.float64)
    return 128.0 * torch.softmax(s * (torch.log(torch.tensor(2.0, dtype=torch.float64)) / 16),
                                 dim=-1)


def error_bound(n):
    """Bound on ``|int_softmax - float_reference|`` for a row of ``n`` scores (derivation above)."""
    if n < 1:
        raise ValueError("a softmax row needs at least one score")
    return max(1.0, 0.5 + 1 / 512 + 5 * (n + 1) / 1024)
