"""Checking a parsed YAML mapping against a schema: the one checker behind design configs
and board files, so that both report a problem the same way, with its place in the file
(``array.rows``), what was found and what is expected.

A schema maps each key to a leaf ``(type, low, high, help)`` (``low``/``high`` inclusive, or
None) or to a nested schema (a section).
"""

import difflib

from .errors import UserError

__all__ = ["check_mapping", "check_leaf", "show"]


def show(value, limit=40):
    """``repr(value)``, cut short: a message must stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _key(key):
    """A key as it can be printed on one line: plain if it is a plain name, else its repr."""
    text = str(key)
    plain = isinstance(key, str) and text.isprintable() and text.strip() == text and text
    return text[:40] if plain else show(key)


def check_leaf(value, spec, path):
    """``value`` checked against a leaf spec (an int is accepted where a float is expected)."""
    kind, low, high, help_text = spec
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise UserError(f"{path}: expected {kind.__name__}, got {show(value)} "
                        f"({type(value).__name__}): {help_text}")
    if low is not None and not low <= value <= high:
        raise UserError(f"{path}: {show(value)} is outside [{low}, {high}]: {help_text}")
    return value


def check_mapping(raw, schema, where="", *, optional=(), accept=None):
    """The checked values of ``raw`` as a dict shaped like ``schema``.

    Unknown keys are refused with a did-you-mean; keys in ``optional`` (paths as
    ``section.key`` or top-level keys) may be missing and come back as None; ``accept(path,
    value)`` may pass a leaf value the spec would refuse (``auto`` sizes, a null option).
    """
    label = where or "config"
    if not isinstance(raw, dict):
        raise UserError(f"{label}: expected a mapping of {', '.join(schema)}, got "
                        f"{type(raw).__name__}")
    prefix = f"{where}." if where else ""
    for key in raw:
        if key not in schema:
            close = difflib.get_close_matches(str(key), schema, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{prefix}{_key(key)}: unknown key{hint}; known keys here: "
                            f"{', '.join(schema)}")
    out = {}
    for key, spec in schema.items():
        path = prefix + key
        if key not in raw:
            if path in optional or key in optional:
                out[key] = None
                continue
            what = spec[3] if isinstance(spec, tuple) else f"a section with {', '.join(spec)}"
            raise UserError(f"{path}: missing ({what})")
        if isinstance(spec, dict):
            out[key] = check_mapping(raw[key], spec, path, optional=optional, accept=accept)
        elif accept is not None and accept(path, raw[key]):
            out[key] = raw[key]
        else:
            out[key] = check_leaf(raw[key], spec, path)
    return out
