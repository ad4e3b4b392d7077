"""Pinned host keys against a real OpenSSH server on loopback, in both pinning
modes: the recorded key works, a changed key is refused (even right after a
successful run, with a live ControlMaster, and with host key checking turned
off globally), and update_keys.yml brings a reinstalled server back. The
user's ~/.ssh/known_hosts is never read or written."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml

from lab.sshd import keygen, ssh_banner, start_vpshost
from support.ansible_run import BIN, REPO, ansible_env, run_playbook

NODE = "vpm007.front.sepia.ceph.com"
OWNER = "alice@laptop"


@pytest.fixture
def server(tmp_path):
    """A real sshd at 127.0.1.7 and the client key that may log in as root."""
    client_key = keygen(tmp_path / "client_key")
    host = start_vpshost(7, tmp_path / "run", client_key.with_suffix(".pub"), client_key)
    yield host
    host.stop()


def served_keys(host) -> set[str]:
    return {" ".join((host.workdir / f"ssh_host_{t}_key.pub").read_text().split()[:2]) for t in ("ed25519", "ecdsa")}


def reinstall(host) -> None:
    """New host keys, as a reinstalled machine has; sshd re-reads them on SIGHUP."""
    for key_type in ("ed25519", "ecdsa"):
        for path in host.workdir.glob(f"ssh_host_{key_type}_key*"):
            path.unlink()
        keygen(host.workdir / f"ssh_host_{key_type}_key", key_type, "reinstalled")
    os.kill(host.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if ssh_banner(host.address, host.port):
            return
    raise AssertionError("sshd did not come back after SIGHUP")


@pytest.mark.parametrize("mode", ["known_hosts_command", "known_hosts_file"])
def test_pinned_keys(server, tmp_path, mode):
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    db = f"sqlite:///{tmp_path / 'lab.db'}"
    lab = Lab(db)
    lab.set_node(NODE, {"machine_type": "vps", "vpshost": "mira001.front.sepia.ceph.com",
                        "ssh_host": server.address, "ssh_port": server.port}, actor="admin@lab")
    lab.lock(owner=OWNER, names=[NODE])

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    user_known_hosts = home / ".ssh" / "known_hosts"
    # The right keys under the node's name: if ssh ever read this file, the wrong-key runs below would pass.
    user_known_hosts.write_text("".join(f"{NODE} {key}\n" for key in served_keys(server)))
    user_known_hosts_before = user_known_hosts.read_bytes()

    source = tmp_path / "locks.yml"
    source.write_text(yaml.safe_dump({"plugin": "teuthology.lab.locks", "user": "root", "host_key_mode": mode,
                                      "known_hosts_file": str(tmp_path / "pinned_known_hosts")}))
    env = {"HOME": str(home), "TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": OWNER,
           "ANSIBLE_PRIVATE_KEY_FILE": str(server.client_key), "ANSIBLE_TIMEOUT": "15"}

    def ping(control_dir: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [BIN / "ansible", "all", "-i", source, "-m", "raw", "-a", "echo pinned-$((40+2))"],
            env=ansible_env(**env, ANSIBLE_SSH_CONTROL_PATH_DIR=str(tmp_path / control_dir), **extra),
            capture_output=True, text=True, timeout=120, check=False,
        )

    # Record the keys the server serves, as teuthology-lock --update-keys would.
    run = run_playbook(REPO / "playbooks/update_keys.yml", env=env)
    assert run.returncode == 0, run.output
    assert f"host keys changed: {NODE}" in run.output
    assert set(lab.query(names=[NODE])[0]["ssh_pub_key"].splitlines()) == served_keys(server)

    ok = ping("cp1")
    assert ok.returncode == 0 and "pinned-42" in ok.stdout, ok.stdout + ok.stderr
    assert ping("cp1", ANSIBLE_HOST_KEY_CHECKING="False").returncode == 0

    # Another key recorded: refused at once, though the master of the run above is alive.
    wrong = keygen(tmp_path / "wrong_key")
    lab.set_node(NODE, {"ssh_pub_key": wrong.with_suffix(".pub").read_text()}, actor="admin@lab")
    for extra in ({}, {"ANSIBLE_HOST_KEY_CHECKING": "False"}):
        refused = ping("cp1", **extra)
        assert refused.returncode != 0, (extra, refused.stdout)
        assert "Host key verification failed" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
        assert "pinned-42" not in refused.stdout

    # The server is reinstalled (new keys): update_keys records them and the node works again.
    reinstall(server)
    assert ping("cp2").returncode != 0  # still the wrong key on record
    run = run_playbook(REPO / "playbooks/update_keys.yml", "-e", f"owner={OWNER}", env=env)
    assert run.returncode == 0 and f"host keys changed: {NODE}" in run.output, run.output
    assert set(lab.query(names=[NODE])[0]["ssh_pub_key"].splitlines()) == served_keys(server)
    again = ping("cp2")
    assert again.returncode == 0 and "pinned-42" in again.stdout, again.stdout + again.stderr
    run = run_playbook(REPO / "playbooks/update_keys.yml", env=env)
    assert "host keys changed: none" in run.output

    assert user_known_hosts.read_bytes() == user_known_hosts_before
    assert sorted(p.name for p in (home / ".ssh").iterdir()) == ["known_hosts"]
    lab.close()
