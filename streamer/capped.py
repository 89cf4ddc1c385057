"""Per-key state kept within a cap: a dict whose order is least recently touched first."""

from __future__ import annotations

from typing import Any


def touch(entries: dict[str, Any], key: str, value: Any | None) -> None:
    """Make ``value`` ``key``'s entry, last in order (the most recently touched); None removes
    the key."""
    entries.pop(key, None)
    if value is not None:
        entries[key] = value


def drop_oldest(entries: dict[str, Any], cap: int) -> int:
    """Remove the least recently touched entries beyond ``cap`` (0: no cap); how many went."""
    excess = len(entries) - cap if cap else 0
    for key in list(entries)[: max(excess, 0)]:
        del entries[key]
    return max(excess, 0)
