"""The negative families: the one list of their names (column names of the shards, in order)."""

from __future__ import annotations

SWAP_FAMILIES: tuple[str, ...] = ("relation_swap", "attribute_swap", "object_swap")
REPLACE_FAMILIES: tuple[str, ...] = ("relation_replace", "attribute_replace", "object_replace")
ALL_FAMILIES: tuple[str, ...] = SWAP_FAMILIES + REPLACE_FAMILIES
