"""make test and make demo need root (apt-get, libvirtd, sshd in mount namespaces): run as
another user, they stop at once, before running anything, and say why; make deps does not."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support.ansible_run import REPO

USER = "nobody"


@pytest.fixture
def checkout():
    """The Makefile (and the files its rules name) in a directory the unprivileged user can read
    (the checkout may be under /root) and cannot change: nothing it would run is there."""
    directory = Path(tempfile.mkdtemp(prefix="tlab-make-"))
    directory.chmod(0o755)
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(REPO / name, directory / name)
    yield directory
    shutil.rmtree(directory)


def make_as_user(directory: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """make as a user types it, not as a sub-make of the make test that runs these tests."""
    env = {key: value for key, value in os.environ.items() if key not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    start = time.monotonic()
    done = subprocess.run(["runuser", "-u", USER, "--", "make", "-C", str(directory), *args],
                          capture_output=True, text=True, timeout=60, check=False, env=env)
    return done, time.monotonic() - start


@pytest.mark.parametrize("goal", ["test", "demo"])
def test_test_and_demo_stop_at_once_without_root(checkout, goal):
    done, seconds = make_as_user(checkout, goal)
    assert done.returncode != 0
    assert f"make {goal} needs root: it installs Debian packages with apt-get and starts the local lab" in done.stderr, done.stderr
    # make prints every recipe line it runs: none ran (no ensure-apt, no pip, no pytest).
    assert [line for line in done.stdout.splitlines() if not line.startswith("make: ")] == [], done.stdout
    assert seconds < 10


def test_deps_does_not_need_root(checkout):
    # A dry run (-n): it lists what deps would run, and is not stopped by the root check.
    done, _seconds = make_as_user(checkout, "-n", "deps")
    assert done.returncode == 0, done.stderr
    assert "needs root" not in done.stderr
    assert "tools/ensure-apt" in done.stdout
