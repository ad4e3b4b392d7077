"""Seed a lock database with slots, through the same module_utils the modules use."""

from __future__ import annotations

from typing import Any

ADMIN = "admin@lab"


def seed(lab: Any, machine_type: str, count: int, prefix: str | None = None, **fields: Any) -> list[str]:
    """Add ``count`` up, free nodes named PREFIX001.front.sepia.ceph.com ...; returns their names."""
    prefix = prefix or machine_type
    names = [f"{prefix}{i:03d}.front.sepia.ceph.com" for i in range(1, count + 1)]
    for name in names:
        lab.set_node(name, {"machine_type": machine_type, "arch": "x86_64", **fields}, actor=ADMIN)
    return names


def snapshot(lab: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every node and every history row: equal snapshots mean nothing changed."""
    return lab.query(), lab.history()
