"""Paths shared by the lab modules."""

from __future__ import annotations

import os
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent
TESTS_DIR = LAB_DIR.parent
REPO_ROOT = TESTS_DIR.parent
LIBVIRT_URI = "qemu:///system"


def cache_dir() -> Path:
    """Cache root: $TEUTHOLOGY_LAB_CACHE, else <repo>/.cache/lab (gitignored)."""
    env = os.environ.get("TEUTHOLOGY_LAB_CACHE")
    path = Path(env) if env else REPO_ROOT / ".cache" / "lab"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()
