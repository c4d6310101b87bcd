"""Deterministic Verilog emission, its canonical form, and the content hashes of build folders and
caches: the one place where Verilog is canonicalised and hashed."""

import hashlib
import json
import re

from amaranth.back import verilog

__all__ = ["emit_verilog", "canonical_verilog", "content_hash", "digest"]


def emit_verilog(component, name):
    """Verilog of ``component`` as module ``name``.

    Source locations are left out so that the text depends only on the design, not on where
    the generator is checked out: the same config gives byte-identical RTL anywhere.
    """
    return canonical_verilog(verilog.convert(component, name=name, emit_src=False))


_MODULE_HEADER = re.compile(r"^(module (?:\\\S+ |\w+)\s*\()(.*?)(\);)", re.MULTILINE | re.DOTALL)


def canonical_verilog(text):
    """``text`` with every module's port list in sorted order.

    Amaranth lists the clock and reset ports of undriven domains in the iteration order of a
    set of domain names, which follows Python's per-process string hash seed; every instance
    is connected by port name, so sorting the header makes the text independent of the seed
    without changing the design.
    """
    def sort(match):
        ports = sorted(p.strip() for p in match.group(2).split(","))
        # An escaped identifier (\name) ends at whitespace: keep a space before the comma.
        ports = [p + " " if p.startswith("\\") else p for p in ports]
        return match.group(1) + ", ".join(ports) + match.group(3)
    return _MODULE_HEADER.sub(sort, text)


def content_hash(obj, length=12):
    """Short SHA-256 of a JSON-able object in canonical form."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def digest(*parts, length=16):
    """Short SHA-256 over ``parts`` (bytes, or anything with a ``str``), each one delimited, so
    that moving bytes from one part to the next changes the hash."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:length]
