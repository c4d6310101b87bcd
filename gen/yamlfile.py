"""Reading the YAML files a user hands us (design configs, board files), strictly.

Every problem is one line that names the file: a path that is missing, a folder or too large;
bytes that are not UTF-8 text; YAML that does not parse; an empty document; a key given twice
(plain YAML keeps the last silently); anchors and aliases (not needed by any of our files, and
the way a few hundred bytes expand into gigabytes).
"""

from pathlib import Path

import yaml

from .errors import UserError

__all__ = ["read_yaml", "MAX_BYTES"]

#: Largest file read; our configs and board files are about a kilobyte.
MAX_BYTES = 1 << 20


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and aliases."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(None, None, "aliases (*name) are not accepted; write the "
                                       "value out", event.start_mark)
        if self.check_event(yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent):
            event = self.peek_event()
            if getattr(event, "anchor", None):
                raise yaml.MarkedYAMLError(None, None, "anchors (&name) are not accepted; write "
                                           "the value out", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.MarkedYAMLError(None, None, "a mapping key must be a plain value",
                                           key_node.start_mark) from None
            if duplicate:
                raise yaml.MarkedYAMLError(None, None, f"key {key!r} is given twice",
                                           key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _one_line(exc):
    """A YAML error as one line: the problem and where it is."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def read_yaml(path, what="file"):
    """The document in ``path``, parsed strictly; ``what`` names the kind of file in errors."""
    path = Path(path)
    if "\0" in str(path):
        raise UserError(f"{what} {str(path)!r}: a file name cannot hold a NUL byte")
    try:
        if not path.exists():
            raise UserError(f"{what} {path} does not exist")
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not a {what}")
        if not path.is_file():
            raise UserError(f"{path}: is not a regular file")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise UserError(f"{path}: {size} bytes is too large for a {what} "
                            f"(at most {MAX_BYTES})")
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if b"\0" in data:
        raise UserError(f"{path}: holds binary data, not a YAML {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if not text.strip():
        raise UserError(f"{path}: is empty; a {what} is a YAML mapping")
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {_one_line(exc)}") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a {what}") from None
    if document is None:
        raise UserError(f"{path}: is empty (only comments); a {what} is a YAML mapping")
    return document
