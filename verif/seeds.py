"""The seed of the random tests: ``ACCELGEN_SEED`` (an integer), default `DEFAULT_SEED`.

The default keeps every run reproducible; set the variable to explore other stimuli, e.g.
``ACCELGEN_SEED=12345 python -m pytest verif/test_softmax.py``. `verif.sim.run_cocotb` passes
the value into the simulator, every random test derives its generators from it with
`rng`/`np_rng` (plus a per-use salt, so that tests do not share streams), and failure messages
name it so that a failing run can be repeated.
"""

import os
import random
import zlib

__all__ = ["ENV", "DEFAULT_SEED", "seed", "derive", "rng", "np_rng", "describe"]

ENV = "ACCELGEN_SEED"
DEFAULT_SEED = 20240601


def seed():
    """The session seed: ``$ACCELGEN_SEED`` or `DEFAULT_SEED`."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_SEED
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"{ENV}={text!r} is not an integer") from None


def derive(salt=0):
    """A 32-bit seed from the session seed and ``salt`` (an int or a string)."""
    if isinstance(salt, str):
        salt = zlib.crc32(salt.encode())
    return (seed() * 1_000_003 + int(salt)) & 0xFFFFFFFF


def rng(salt=0):
    """A `random.Random` seeded from the session seed and ``salt``."""
    return random.Random(derive(salt))


def np_rng(salt=0):
    """A numpy Generator seeded from the session seed and ``salt``."""
    import numpy as np
    return np.random.default_rng(derive(salt))


def describe():
    """``'ACCELGEN_SEED=<n>'``: for failure messages and logs."""
    return f"{ENV}={seed()}"
