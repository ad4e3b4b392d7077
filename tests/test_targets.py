"""The targets lock.yml and list_targets.yml print and write, checked against their consumers:
a user copying the printed block from the terminal, and teuthology's own code connecting with
each target's value to a real sshd (teuthology.orchestra.connection.connect, from teuthology on
PyPI in a virtualenv of its own: tests/support/teuthology_venv.py)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from lab import keyscan
from lab.sshd import _bindable, keygen, start_vpshost
from support.ansible_run import REPO, run_playbook
from support.printed import printed_targets
from support.seed import seed
from support.teuthology_venv import run_teuthology

OWNER = "alice@laptop"
# What the terminal shows: with the checkout's ansible.cfg (callback_result_format = yaml), and with
# Ansible's own defaults (JSON results), as with the installed collection and no ansible.cfg.
CONFIGS = {"project ansible.cfg": {"ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}, "ansible defaults": {}}


def public_key(path: Path) -> str:
    """``TYPE BASE64`` of a public key file."""
    return " ".join(path.read_text().split()[:2])


def new_key(path: Path, key_type: str = "ed25519") -> str:
    """A new key pair at ``path`` (ssh-keygen); its public key."""
    return public_key(Path(f"{keygen(path, key_type)}.pub"))


@pytest.mark.parametrize("config", CONFIGS)
def test_printed_targets_copy_as_the_targets_file(db_url, lab, tmp_path, config):
    smithi = seed(lab, "smithi", 3)
    for name, key_types in zip(smithi, (("ed25519", "ecdsa", "rsa"), ("rsa",)), strict=False):
        keys = [new_key(tmp_path / f"{name}-{key_type}", key_type) for key_type in key_types]
        lab.set_node(name, {"ssh_pub_key": "\n".join(keys)}, actor="admin@lab")
    env = {"TEUTHOLOGY_LAB_DB": db_url, "TEUTHOLOGY_LAB_OWNER": OWNER, **CONFIGS[config]}

    lock_file = tmp_path / "lock-targets.yml"
    run = run_playbook(REPO / "playbooks/lock.yml", "-e", "count=3", "-e", "machine_type=smithi", "-e", f"targets_file={lock_file}",
                       env=env)
    assert run.returncode == 0, run.output
    written = yaml.safe_load(lock_file.read_text())
    assert set(written["targets"]) == {f"ubuntu@{name}" for name in smithi}
    assert yaml.safe_load(printed_targets(run.output)) == written, printed_targets(run.output)

    list_file = tmp_path / "list-targets.yml"
    run = run_playbook(REPO / "playbooks/list_targets.yml", "-e", f"targets_file={list_file}", env=env)
    assert run.returncode == 0, run.output
    assert yaml.safe_load(list_file.read_text()) == written
    assert yaml.safe_load(printed_targets(run.output)) == written, printed_targets(run.output)


# --- teuthology's own connection code against a real sshd ----------------------------------------

NODE = "smithi201.front.sepia.ceph.com"  # ed25519 and rsa recorded (all the server serves)
RSA_NODE = "smithi202.front.sepia.ceph.com"  # the same server, only its rsa key recorded


@pytest.fixture
def server(tmp_path):
    """A real sshd on port 22 of a loopback address (teuthology's connect has no port), serving
    ed25519 and rsa host keys: recorded sorted, the ed25519 key comes first, which teuthology
    could not read when a target held every key."""
    index = next((i for i in range(200, 250) if _bindable(f"127.0.1.{i}", 22)), None)
    assert index is not None, "no address in 127.0.1.200-249 with port 22 free"
    client_key = keygen(tmp_path / "client_key")
    host = start_vpshost(index, tmp_path / "run", client_key.with_suffix(".pub"), client_key)
    try:
        assert host.port == 22
        config = host.workdir / "sshd_config"
        keygen(host.workdir / "ssh_host_rsa_key", "rsa", host.name)
        config.write_text(config.read_text().replace("ssh_host_ecdsa_key", "ssh_host_rsa_key"))
        os.kill(host.pid, signal.SIGHUP)  # sshd re-executes itself and re-reads its configuration
        deadline = time.monotonic() + 20
        while {key[0] for key in keyscan(22, host.address, timeout=5)} != {"ssh-ed25519", "ssh-rsa"}:
            assert time.monotonic() < deadline, "sshd did not come back with ed25519 and rsa host keys"
            time.sleep(0.3)
        yield host
    finally:
        host.stop()


CONNECT = """
import io, json, sys
import paramiko
from teuthology.orchestra import connection, run

args = json.load(sys.stdin)
result = {"ran": [], "refused": []}
for user_at_host, host_key in args["targets"]:
    ssh = connection.connect(user_at_host, host_key=host_key, key_filename=args["key"], retry=False, timeout=30)
    out = io.StringIO()
    run.run(client=ssh, args=["echo", run.Raw("$SSH_CONNECTION"), run.Raw("$(id -un)")], stdout=out)
    _, _, server, port, user = out.getvalue().split()
    result["ran"].append([server, port, user])
    ssh.close()
for user_at_host, host_key in args["wrong"]:
    try:
        connection.connect(user_at_host, host_key=host_key, key_filename=args["key"], retry=False, timeout=30)
        result["refused"].append("connected")
    except paramiko.BadHostKeyException as e:
        result["refused"].append(type(e).__name__)
print(json.dumps(result))
"""


def test_teuthology_connects_with_each_target(server, tmp_path):
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    db = f"sqlite:///{tmp_path / 'lab.db'}"
    lab = Lab(db)
    for name in (NODE, RSA_NODE):
        lab.set_node(name, {"machine_type": "smithi", "ssh_host": server.address, "ssh_port": 22}, actor="admin@lab")
    lab.set_node(RSA_NODE, {"ssh_pub_key": public_key(server.workdir / "ssh_host_rsa_key.pub")}, actor="admin@lab")
    lab.lock(owner=OWNER, names=[NODE, RSA_NODE], description="teuthology-run")
    env = {"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": OWNER, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}

    # Record every key the server serves, as teuthology-lock --update-keys would.
    run = run_playbook(REPO / "playbooks/update_keys.yml", "-e", f"names={NODE}", env=env)
    assert run.returncode == 0 and f"host keys changed: {NODE}" in run.output, run.output
    served = {f"{key_type} {blob}" for key_type, blob in keyscan(22, server.address)}
    recorded = lab.query(names=[NODE])[0]["ssh_pub_key"]
    assert recorded.splitlines() == sorted(served) and recorded.startswith("ssh-ed25519 ")

    # The targets as lock.yml (the nodes are already held: it changes nothing) and list_targets.yml give them.
    targets = []
    for playbook in ("lock.yml", "list_targets.yml"):
        targets_file = tmp_path / f"{playbook}-targets.yml"
        run = run_playbook(REPO / "playbooks" / playbook, "-e", f"names={NODE},{RSA_NODE}", "-e", "targets_user=root",
                           "-e", f"targets_file={targets_file}", env=env)
        assert run.returncode == 0, run.output
        for source in (printed_targets(run.output), targets_file.read_text()):
            targets.extend(yaml.safe_load(source)["targets"].items())
    lab.close()
    assert len(targets) == 8

    wrong = new_key(tmp_path / "wrong_key")
    result = run_teuthology(CONNECT, {"targets": targets, "wrong": [[f"root@{NODE}", wrong]], "key": str(server.client_key)},
                            hosts={NODE: server.address, RSA_NODE: server.address})
    assert result["ran"] == [[server.address, "22", "root"]] * len(targets), result
    assert result["refused"] == ["BadHostKeyException"]
    # Each target holds one key, the ed25519 one when it is recorded.
    assert dict(targets) == {f"root@{NODE}": public_key(server.workdir / "ssh_host_ed25519_key.pub"),
                             f"root@{RSA_NODE}": public_key(server.workdir / "ssh_host_rsa_key.pub")}
