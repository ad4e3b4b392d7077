"""Real teuthology for tests that check the collection against teuthology's own code.

teuthology pins ansible-core 2.17 and pulls gevent and more, so it cannot go into
the project's .venv: it gets a virtualenv of its own, built once from the pinned
tests/support/teuthology-requirements.txt (pip, from PyPI) under
.cache/teuthology-venv/, keyed by that file and the Python version, and reused.

``run_teuthology(code, args)`` runs a Python snippet with that venv's Python and
returns what the snippet printed on stdout, parsed as JSON. The snippet reads its
input as JSON from stdin. It runs with a private HOME whose ~/.teuthology.yaml is
``config`` (teuthology reads it at import), and, when ``hosts`` is given, in a
mount namespace of its own whose /etc/hosts maps those names to loopback
addresses (teuthology connects to a target by its name; the system's /etc/hosts
is not touched).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from support.ansible_run import REPO

REQUIREMENTS = Path(__file__).resolve().parent / "teuthology-requirements.txt"
CACHE = REPO / ".cache" / "teuthology-venv"


def teuthology_version() -> str:
    pins = [line for line in REQUIREMENTS.read_text().splitlines() if line.startswith("teuthology==")]
    assert len(pins) == 1, f"{REQUIREMENTS} must pin teuthology once"
    return pins[0].split("==", 1)[1]


def teuthology_venv() -> Path:
    """The cached virtualenv with teuthology installed; built (once) if missing."""
    python = "{}.{}".format(*sys.version_info[:2])
    digest = hashlib.sha256(f"{python}\n{REQUIREMENTS.read_text()}".encode()).hexdigest()[:12]
    venv = CACHE / f"teuthology-{teuthology_version()}-py{python}-{digest}"
    marker = venv / ".installed"
    if marker.exists():
        return venv
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be building it
        if marker.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)  # a build that was cut short
        # The interpreter the project's venv was made from: a venv of a venv would see .venv's packages.
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(REQUIREMENTS)],
                             capture_output=True, text=True, timeout=1800, check=False)
        assert pip.returncode == 0, f"installing teuthology into {venv} failed:\n{pip.stdout}{pip.stderr}"
        marker.write_text(digest + "\n")
    return venv


def run_teuthology(code: str, args: Any = None, *, config: dict[str, Any] | None = None,
                   hosts: dict[str, str] | None = None, timeout: float = 300) -> Any:
    """Run ``code`` with real teuthology importable; ``args`` arrive as JSON on its stdin; returns its stdout as JSON."""
    python = teuthology_venv() / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="tlab-teuthology-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / ".teuthology.yaml").write_text(yaml.safe_dump(config or {}))
        argv = [str(python), "-c", code]
        if hosts:
            for name, address in hosts.items():
                assert address.startswith("127."), f"tests only talk to loopback, not {address}"
                assert name.replace(".", "").replace("-", "").isalnum(), name
            etc_hosts = Path(tmp) / "hosts"
            etc_hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{address} {name}\n" for name, address in hosts.items()))
            argv = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                    'mount --bind "$0" /etc/hosts && exec "$@"', str(etc_hosts), *argv]
        env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        proc = subprocess.run(argv, input=json.dumps(args), capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=tmp, check=False)
    assert proc.returncode == 0, f"the teuthology snippet failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"the teuthology snippet printed no JSON:\n{proc.stdout}\n{proc.stderr}") from None
