"""Deterministic Verilog emission and content hashes for build folders."""

import hashlib
import json

from amaranth.back import verilog

__all__ = ["emit_verilog", "content_hash"]


def emit_verilog(component, name):
    """Verilog of ``component`` as module ``name``.

    Source locations are left out so that the text depends only on the design, not on where
    the generator is checked out: the same config gives byte-identical RTL anywhere.
    """
    return verilog.convert(component, name=name, emit_src=False)


def content_hash(obj, length=12):
    """Short SHA-256 of a JSON-able object in canonical form."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]
