"""Shared pieces for strict configuration files: errors collected with their paths, a
YAML loader that rejects duplicate keys, alias bombs and deep nesting, and reading a file
into a YAML document."""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

#: Longest excerpt of a value (or of one error message) shown in an error.
MAX_EXCERPT = 200
#: Errors listed in a :class:`ConfigError`; the rest are counted.
MAX_ERRORS = 100
#: Deepest nesting of mappings and lists in a YAML document (the config needs 5).
MAX_DEPTH = 32
#: Most nodes a YAML document may hold once its aliases are expanded: a 431-byte "billion
#: laughs" document expands to tens of millions; 10,000 monitors with labels to ~200,000.
MAX_EXPANDED_NODES = 1_000_000

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = MAX_EXCERPT
for _attr in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset"):
    setattr(_REPR, _attr, 8)


def shorten(text: str, limit: int = MAX_EXCERPT) -> str:
    """``text`` cut to ``limit`` characters, saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text) - limit} more)"


def excerpt(value: Any) -> str:
    """A bounded ``repr`` of ``value`` for an error message: nested containers, long
    lists and long strings are cut (``...``, ``…(N more)``) without walking all of them."""
    if isinstance(value, str):
        return shorten(repr(value))
    return shorten(_REPR.repr(value))


class ConfigError(Exception):
    """A configuration that cannot be used; ``errors`` lists every problem with its path."""

    def __init__(self, errors: list[str], source: str = "config", more: int = 0) -> None:
        self.errors = [shorten(e, 2 * MAX_EXCERPT) for e in errors[:MAX_ERRORS]]
        #: Errors found but not listed (beyond :data:`MAX_ERRORS`).
        self.more = more + max(len(errors) - MAX_ERRORS, 0)
        self.source = source
        total = len(self.errors) + self.more
        tail = [f"- … and {self.more} more error(s)"] if self.more else []
        super().__init__(
            f"{source}: {total} error(s):\n" + "\n".join([*(f"- {e}" for e in self.errors), *tail])
        )

    def one_line(self) -> str:
        """The errors on one line (for a log), at most ten of them."""
        shown = "; ".join(self.errors[:10])
        rest = len(self.errors) - 10 + self.more
        return f"{self.source}: {shown}" + (f"; … and {rest} more error(s)" if rest > 0 else "")


class Errors:
    """Collects error messages with their paths."""

    def __init__(self) -> None:
        self.items: list[str] = []
        #: Errors counted but not kept (beyond :data:`MAX_ERRORS`).
        self.more = 0

    def add(self, path: str, message: str) -> None:
        if len(self.items) >= MAX_ERRORS:
            self.more += 1
            return
        text = f"{shorten(path)}: {message}" if path else message
        self.items.append(shorten(text, 2 * MAX_EXCERPT))


def mapping(value: Any, path: str, errors: Errors, allowed: set[str]) -> dict[str, Any]:
    """``value`` as a dict (empty for nothing); an error for a non-mapping or an unknown key."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping, got {kind(value)}")
        return {}
    for key in value:
        if key not in allowed:
            errors.add(
                join(path, shorten(str(key))),
                f"unknown key (allowed: {', '.join(sorted(allowed))})",
            )
    return dict(value)


def list_items(value: Any, path: str, errors: Errors, what: str) -> list[tuple[str, Any]]:
    """``(path[i], item)`` for each item of the list at ``path``; for anything but a list,
    the error "expected ``what``" and no items."""
    if not isinstance(value, list):
        errors.add(path, f"expected {what}, got {kind(value)}")
        return []
    return [(f"{path}[{index}]", item) for index, item in enumerate(value)]


def join(path: str, key: str) -> str:
    """The path of ``key`` under ``path``."""
    return f"{path}.{key}" if path else key


def kind(value: Any) -> str:
    """What a value is, for error messages."""
    return "nothing" if value is None else type(value).__name__


class StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects duplicate keys instead of keeping the last, nesting
    deeper than :data:`MAX_DEPTH`, and documents whose aliases expand to more than
    :data:`MAX_EXPANDED_NODES` nodes (or refer back into themselves)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self._depth > MAX_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        expanded_size(node)
        return super().construct_document(node)


def expanded_size(root: yaml.Node) -> int:
    """How many nodes ``root`` holds with every alias expanded, each distinct node walked
    once (so a bomb costs what its text costs); a ``ConstructorError`` past
    :data:`MAX_EXPANDED_NODES`, past :data:`MAX_DEPTH` levels (aliases included), or for
    an alias inside itself."""
    seen: dict[int, tuple[int, int]] = {}  # id -> (nodes, levels)
    open_nodes: set[int] = set()

    def refuse(message: str, node: yaml.Node) -> yaml.constructor.ConstructorError:
        return yaml.constructor.ConstructorError(None, None, message, node.start_mark)

    def walk(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in seen:
            return seen[key]
        if key in open_nodes:
            raise refuse("an alias refers to a node that contains it", node)
        if depth > MAX_DEPTH + 1:  # depth counts the scalar leaf
            raise refuse(f"nested deeper than {MAX_DEPTH} levels through aliases", node)
        nodes, levels = 1, 1
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            open_nodes.add(key)
            children: list[yaml.Node] = (
                node.value
                if isinstance(node, yaml.SequenceNode)
                else [part for pair in node.value for part in pair]
            )
            for child in children:
                child_nodes, child_levels = walk(child, depth + 1)
                nodes += child_nodes
                levels = max(levels, child_levels + 1)
                if nodes > MAX_EXPANDED_NODES:
                    raise refuse(
                        f"aliases expand this document past {MAX_EXPANDED_NODES:,} nodes "
                        "(an alias bomb?)",
                        node,
                    )
                if depth + levels - 2 > MAX_DEPTH:  # levels count the scalar leaf
                    raise refuse(f"nested deeper than {MAX_DEPTH} levels through aliases", node)
            open_nodes.discard(key)
        seen[key] = (nodes, levels)
        return nodes, levels

    return walk(root, 1)[0]


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, list | dict):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_LIBYAML: Any = getattr(yaml, "CSafeLoader", None)


class FastStrictLoader(_LIBYAML or StrictLoader):  # type: ignore[misc]
    """:class:`StrictLoader`'s rules with libyaml's parser and composer (ten times faster;
    the plain one when PyYAML was built without libyaml). Nesting is checked on the
    event stream first (:func:`check_depth`): libyaml's composer recurses in C."""

    def construct_document(self, node: yaml.Node) -> Any:
        expanded_size(node)
        return super().construct_document(node)


FastStrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def check_depth(text: str) -> None:
    """A ``ComposerError`` when ``text`` nests more than :data:`MAX_DEPTH` mappings and
    lists (read as a stream of parser events, so nothing deep is ever built)."""
    depth = 0
    for event in yaml.parse(text, Loader=_LIBYAML or yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested deeper than {MAX_DEPTH} levels",
                    event.start_mark,  # type: ignore[arg-type]
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def decode_yaml(text: str, source: str, error: type[ConfigError] = ConfigError) -> Any:
    """The YAML document in ``text`` (duplicate keys refused); ``error`` when it is not YAML."""
    try:
        if _LIBYAML is None:
            return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass
        check_depth(text)
        return yaml.load(text, Loader=FastStrictLoader)  # a CSafeLoader subclass
    except yaml.YAMLError as err:
        message = shorten(str(err).replace("\n", " "), 2 * MAX_EXCERPT)
        raise error([f"not valid YAML: {message}"], source) from None
    except RecursionError:  # a safety net: StrictLoader bounds the depth first
        raise error([f"nested deeper than {MAX_DEPTH} levels"], source) from None


def read_text(path: str | Path, error: type[ConfigError] = ConfigError) -> str:
    """The UTF-8 text of the file at ``path``; ``error`` (its source the path) otherwise."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise error([f"cannot read: {err}"], str(path)) from err


def read_yaml(path: str | Path, error: type[ConfigError] = ConfigError) -> Any:
    """The YAML document in the file at ``path``; ``error`` (its source the path) when the
    file cannot be read as UTF-8 or is not YAML."""
    return decode_yaml(read_text(path, error), str(path), error)
