"""Argument types shared by the sub-commands: a bad flag is refused by argparse in one line
(``error: argument --seed: ...``) before any work starts."""

import argparse
import math

__all__ = ["seed", "count", "positive_float", "nonnegative_float", "MAX_SEED"]

MAX_SEED = 2 ** 32 - 1


def _int(text, what):
    try:
        return int(text, 0)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def seed(text):
    """A random seed: an integer in 0 .. 2^32-1 (numpy's and nextpnr's range)."""
    value = _int(text, "an integer seed")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is outside 0 .. {MAX_SEED}")
    return value


def count(low=1, high=None):
    """An integer in ``low .. high``."""
    def parse(text):
        value = _int(text, "an integer")
        if value < low or (high is not None and value > high):
            span = f"{low} .. {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} must be {span}")
        return value
    return parse


def _finite(text, accept, what):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or not accept(value):
        raise argparse.ArgumentTypeError(f"{value:g} must be a finite number {what}")
    return value


def positive_float(text):
    """A finite number above 0."""
    return _finite(text, lambda v: v > 0, "above 0")


def nonnegative_float(text):
    """A finite number, 0 or above."""
    return _finite(text, lambda v: v >= 0, "0 or above")
