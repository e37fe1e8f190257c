"""Decode Stripe's bracketed form encoding (``a[b][0][c]=v``, ``expand[]=x``) into nested values."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


class FormDecodeError(ValueError):
    """A parameter name whose brackets cannot be read, or one used both as a value and a hash."""

    def __init__(self, name: str) -> None:
        super().__init__(f"Invalid array or hash: {name}")
        self.param = name


def _split(name: str) -> list[str]:
    head, _, rest = name.partition("[")
    if not rest:
        return [head]
    rest = "[" + rest
    parts = _SEGMENT.findall(rest)
    # Anything left over means unbalanced or junk brackets ("a[b", "a[b]c").
    if "".join(f"[{p}]" for p in parts) != rest or not head:
        raise FormDecodeError(name)
    return [head, *parts]


def _listify(node: Any) -> Any:
    """Turn dicts whose keys are all indices (or appends) into lists, depth first."""
    if isinstance(node, dict):
        converted = {k: _listify(v) for k, v in node.items()}
        if converted and all(isinstance(k, int) for k in converted):
            return [converted[k] for k in sorted(converted)]
        if any(isinstance(k, int) for k in converted):
            raise FormDecodeError("mixed array and hash keys")
        return converted
    return node


def decode(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Build nested dicts and lists from form pairs the way Stripe's API reads them."""
    root: dict[Any, Any] = {}
    append_counters: dict[int, int] = {}
    for name, value in pairs:
        parts = _split(name)
        node: dict[Any, Any] = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            key: Any
            if part == "" and i > 0:
                # "x[]" appends; the counter is per container so repeated keys keep their order.
                key = append_counters.get(id(node), 0)
                append_counters[id(node)] = key + 1
                key = ("append", key)
            elif part.isdigit() and i > 0:
                key = int(part)
            else:
                key = part
            if last:
                if isinstance(node.get(key), dict):
                    raise FormDecodeError(name)
                node[key] = value
            else:
                child = node.setdefault(key, {})
                if not isinstance(child, dict):
                    raise FormDecodeError(name)
                node = child
    return _listify(_normalise_appends(root))


def _normalise_appends(node: Any) -> Any:
    """Give appended entries integer positions after any explicit indices in the same container."""
    if not isinstance(node, dict):
        return node
    explicit = [k for k in node if isinstance(k, int)]
    start = max(explicit) + 1 if explicit else 0
    out: dict[Any, Any] = {}
    for k, v in node.items():
        if isinstance(k, tuple):
            out[start + k[1]] = _normalise_appends(v)
        else:
            out[k] = _normalise_appends(v)
    return out
