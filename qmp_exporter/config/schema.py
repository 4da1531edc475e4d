"""Shared pieces for strict configuration files: errors collected with their paths, a
YAML loader that rejects duplicate keys, and reading a file into a YAML document."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    """A configuration that cannot be used; ``errors`` lists every problem with its path."""

    def __init__(self, errors: list[str], source: str = "config") -> None:
        self.errors = errors
        self.source = source
        super().__init__(
            f"{source}: {len(errors)} error(s):\n" + "\n".join(f"- {e}" for e in errors)
        )


class Errors:
    """Collects error messages with their paths."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)


def mapping(value: Any, path: str, errors: Errors, allowed: set[str]) -> dict[str, Any]:
    """``value`` as a dict (empty for nothing); an error for a non-mapping or an unknown key."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping, got {kind(value)}")
        return {}
    for key in value:
        if key not in allowed:
            errors.add(join(path, str(key)), f"unknown key (allowed: {', '.join(sorted(allowed))})")
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
    """A safe YAML loader that rejects duplicate keys instead of keeping the last."""


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


def decode_yaml(text: str, source: str, error: type[ConfigError] = ConfigError) -> Any:
    """The YAML document in ``text`` (duplicate keys refused); ``error`` when it is not YAML."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise error([f"not valid YAML: {err}".replace("\n", " ")], source) from err


def read_yaml(path: str | Path, error: type[ConfigError] = ConfigError) -> Any:
    """The YAML document in the file at ``path``; ``error`` (its source the path) when the
    file cannot be read as UTF-8 or is not YAML."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise error([f"cannot read: {err}"], source) from err
    return decode_yaml(text, source, error)
