"""Shared pieces for strict configuration files: errors collected with their paths, and a
YAML loader that rejects duplicate keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


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
