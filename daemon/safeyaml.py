"""Reading YAML that may be hostile: bounded in bytes, depth and alias expansion, and total.

A config file is trusted to be a config, not to be small or well-formed: a 537-byte alias bomb expanded to
gigabytes, 1,000 levels of nesting crashed the composer with RecursionError, ``policy: /dev/zero`` read until
memory ran out, and a 5,000-digit number hit Python's int() digit limit. Every such input is refused here with a
message that says where and what, and nothing else escapes: :func:`load` returns a value or raises
:class:`YamlInputError`, and no message quotes the file's content beyond a key or a character.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from failsoft.daemon.limits import CONFIG_MAX_BYTES, CONFIG_MAX_DEPTH, CONFIG_MAX_NODES, CONFIG_MAX_NUMBER_CHARS

# The C scanner is only used for the depth pre-scan (an iterator of events, not recursive); the document itself
# is composed by the pure-Python loader the rest of the config code is written against.
_SCAN_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlInputError(Exception):
    """The text or file cannot be used as YAML config; ``str(exc)`` says what and where (no content quoted)."""


def read_file(path: Path, limit: int = CONFIG_MAX_BYTES) -> str:
    """The UTF-8 text of the regular file at ``path``, at most ``limit`` bytes; YamlInputError (saying why in a
    few words, for "cannot read ... (why)") otherwise.

    Devices (``/dev/zero``), FIFOs and directories are refused before reading; so is a file over the limit, and
    one that is not UTF-8 (a UTF-16 file, a binary). Only ``limit + 1`` bytes are ever read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise YamlInputError(exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise YamlInputError("not a regular file")
        if info.st_size > limit:
            raise YamlInputError(f"{info.st_size} bytes; at most {limit} are read")
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise YamlInputError(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise YamlInputError(f"more than {limit} bytes; at most {limit} are read")
    return decode(data)


def decode(data: bytes) -> str:
    """``data`` as UTF-8 text (a UTF-8 byte-order mark is allowed); YamlInputError names the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        hint = " (it looks like UTF-16; save it as UTF-8)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise YamlInputError(f"not UTF-8 text: byte {exc.start} (line {line}) cannot be decoded{hint}") from None


def _where(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than CONFIG_MAX_DEPTH before anything recursive sees the document.

    The fast C scanner goes first; if it stops at a syntax error (or at libyaml's own nesting limit, which it
    meets while scanning ahead of the events), the pure-Python parser -- iterative too -- walks the events up to
    that point, so the depth is checked in any case and a syntax error is reported in its words.
    """
    try:
        _walk_depth(text, _SCAN_LOADER)
    except yaml.YAMLError:
        _walk_depth(text, yaml.SafeLoader)


def _walk_depth(text: str, loader: Any) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > CONFIG_MAX_DEPTH:
                raise YamlInputError(f"invalid YAML{_where(event.start_mark)}: nested more than "
                                     f"{CONFIG_MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand to more than CONFIG_MAX_NODES values or CONFIG_MAX_DEPTH levels,
    or that refers to itself. Each node is measured once (memoised), so this is linear in the document."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, expanded depth)
    open_nodes: set[int] = set()

    def too_deep(node: yaml.Node) -> YamlInputError:
        return YamlInputError(f"invalid YAML{_where(node.start_mark)}: its aliases nest more than "
                              f"{CONFIG_MAX_DEPTH} levels deep")

    def measure(node: yaml.Node, level: int) -> tuple[int, int]:
        # ``level`` is checked on the way down, so the recursion never goes deeper than the limit.
        key = id(node)
        if key in measured:
            size, depth = measured[key]
            if level + depth > CONFIG_MAX_DEPTH:
                raise too_deep(node)
            return size, depth
        if key in open_nodes:
            raise YamlInputError(f"invalid YAML{_where(node.start_mark)}: an alias refers to a node that contains it")
        if isinstance(node, yaml.ScalarNode):
            measured[key] = (1, 0)
            return 1, 0
        if level >= CONFIG_MAX_DEPTH:
            raise too_deep(node)
        open_nodes.add(key)
        children = list(node.value) if isinstance(node, yaml.SequenceNode) else [n for p in node.value for n in p]
        size, depth = 1, 0
        for child in children:
            child_size, child_depth = measure(child, level + 1)
            size += child_size
            depth = max(depth, child_depth)
            if size > CONFIG_MAX_NODES:
                raise YamlInputError(f"invalid YAML: its aliases expand to more than {CONFIG_MAX_NODES} values "
                                     "(an alias bomb?)")
        open_nodes.discard(key)
        measured[key] = (size, depth + 1)
        return size, depth + 1

    measure(root, 0)


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (with plain YAML the last one silently wins), keys that are lists
    or mappings, and numbers too long to convert."""


def _mapping(loader: BoundedLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # ``<<: *defaults``: merged by construct_mapping below; its keys may be overridden here
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value (a name), not a list or a mapping", key_node.start_mark)
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {repr(key)[:60]} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return dict(loader.construct_mapping(node, deep=deep))


def _number(kind: str) -> Any:
    base = getattr(yaml.SafeLoader, f"construct_yaml_{kind}")

    def construct(loader: BoundedLoader, node: yaml.ScalarNode) -> Any:
        text = str(node.value)
        if len(text) > CONFIG_MAX_NUMBER_CHARS:
            # Too long to convert (int() refuses 4,300 digits, float() overflows): it reads as infinity, which
            # every numeric field refuses with its YAML path.
            return float("-inf") if text.lstrip().startswith("-") else float("inf")
        return base(loader, node)

    return construct


BoundedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
BoundedLoader.add_constructor("tag:yaml.org,2002:int", _number("int"))
BoundedLoader.add_constructor("tag:yaml.org,2002:float", _number("float"))


def load(text: str) -> Any:
    """The value of the YAML document ``text`` (None when empty); YamlInputError for anything unusable."""
    if len(text) > CONFIG_MAX_BYTES:
        raise YamlInputError(f"the text is {len(text)} characters; at most {CONFIG_MAX_BYTES} are read")
    try:
        _check_depth(text)
        loader = BoundedLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_expansion(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or type(exc).__name__
        if isinstance(exc, yaml.reader.ReaderError):
            char = exc.character if isinstance(exc.character, int) else ord(exc.character or "\0")
            problem = f"{exc.reason}: character #x{char:04x} at position {exc.position}"
        raise YamlInputError(f"invalid YAML{_where(mark)}: {problem}") from None
    except (ValueError, OverflowError, TypeError, RecursionError, MemoryError) as exc:
        # A value the constructors could not build (a timestamp out of range, a bad base-60 number, ...).
        raise YamlInputError(f"invalid YAML: a value cannot be read ({type(exc).__name__})") from None
