"""The Molecule scenario extensions/molecule/default in full (`molecule test`): the downburst role on the
local lab, with Molecule's `default` (delegated) driver, the real teuthology.lab.locks inventory, and
host key checking on throughout. About 40 s when the guest image is cached."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import yaml

from lab import cleanup_domains, lab_domains
from support.ansible_run import BIN, REPO, ansible_env

SCENARIO = REPO / "extensions" / "molecule" / "default"
SLOTS = yaml.safe_load((SCENARIO / "vars.yml").read_text())["lab_slots"]
STEPS = ["destroy", "syntax", "create", "converge", "idempotence", "verify"]


def _stop_leftovers(ephemeral: Path) -> None:
    """What the scenario's destroy leaves if it did not run to its end: the lab harness, the slots' domains."""
    try:
        pid = int((ephemeral / "lab" / "harness.pid").read_text())
        if b"lab_harness.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)  # it stops its vpshosts and removes its domains
            deadline = time.monotonic() + 60
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
    except (OSError, ValueError):
        pass
    if Path("/run/libvirt/libvirt-sock").exists():
        cleanup_domains(names=SLOTS)


def test_molecule_test_default_scenario(tmp_path):
    molecule = BIN / "molecule"  # installed by make test (requirements-dev.txt)
    ephemeral = tmp_path / "ephemeral"
    env = ansible_env(
        # This run's own ephemeral directory (lab state, lock database, inventory), not one under the
        # Molecule cache that another run of the scenario could share.
        MOLECULE_EPHEMERAL_DIRECTORY=str(ephemeral),
        VIRTUAL_ENV=str(BIN.parent),  # ansible-compat's cache goes into the venv, not ~/.ansible
        NO_COLOR="1",
    )
    env.pop("ANSIBLE_CONFIG")  # Molecule writes the scenario's ansible.cfg (ansible.cfg of config.yml)
    for name in [n for n in env if n.startswith("MOLECULE_") and n != "MOLECULE_EPHEMERAL_DIRECTORY"]:
        del env[name]
    started = time.monotonic()
    try:
        run = subprocess.run(
            [molecule, "test", "--scenario-name", "default"],
            cwd=REPO,  # the collection root: Molecule finds extensions/molecule/ and its config.yml from there
            env=env, capture_output=True, text=True, timeout=360, check=False,
        )
    finally:
        _stop_leftovers(ephemeral)
    output = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)
    print(f"molecule test: {time.monotonic() - started:.0f} s")
    assert run.returncode == 0, output[-30000:]
    for step in STEPS:
        # "[default > STEP] Executed: Successful" (plain) or "default ➜ STEP: Executed: Successful" (terminal)
        assert re.search(rf"default\W+{step}\W+Executed: Successful", output), (step, output[-30000:])
    assert "actions=7  successful=7" in output, output[-3000:]
    # Host key checking stayed on: Molecule's own default is off.
    assert re.search(r"(?m)^host_key_checking = True$", (ephemeral / "ansible.cfg").read_text())
    # destroy removed the VM (and unlocked its slot, or it would have failed) and stopped the lab.
    assert not set(lab_domains()) & set(SLOTS), "the scenario left a VM behind"
    assert not (ephemeral / "lab" / "harness.pid").exists()
