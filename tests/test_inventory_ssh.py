"""Pinned host keys against a real OpenSSH server on loopback, in both pinning
modes: the recorded key works, a changed key is refused (even right after a
successful run, with a live ControlMaster, with host key checking turned off
globally, and with a user ssh_config that offers the right key another way),
and update_keys.yml brings a reinstalled server back. A run as another remote
user never rides on root's master; each inventory source has its own
known_hosts file. The user's ~/.ssh is never read for keys or written."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from test_inventory import unwrap_unsafe

from lab.sshd import keygen, ssh_banner, start_vpshost
from support.ansible_run import BIN, REPO, ansible_env, run_playbook
from support.mounts import in_private_mounts

NODE = "vpm007.front.sepia.ceph.com"
OTHER_NODE = "vpm008.front.sepia.ceph.com"
OWNER, OTHER_OWNER = "alice@laptop", "bob@desk"


@pytest.fixture
def server(tmp_path):
    """A real sshd at 127.0.1.7 and the client key that may log in as root."""
    client_key = keygen(tmp_path / "client_key")
    host = start_vpshost(7, tmp_path / "run", client_key.with_suffix(".pub"), client_key)
    yield host
    host.stop()


@pytest.fixture
def control_dir():
    """Ansible's control_path_dir, short: a unix socket path holds at most 108 bytes, and tmp_path is long."""
    path = Path(tempfile.mkdtemp(prefix="tlab-cp-"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def user_ssh(tmp_path):
    """What ssh takes for the user's ~/.ssh in `in_user_ssh` runs (empty: no user ssh_config)."""
    path = tmp_path / "user_ssh"
    path.mkdir(mode=0o700)
    return path


def in_user_ssh(user_ssh: Path, argv: list) -> list[str]:
    """argv run in a private mount namespace in which `user_ssh` is the user's ~/.ssh.

    ssh finds ~ in the password database, not in $HOME, so only a mount makes a
    test's files the user's ssh_config and known_hosts (and keeps the machine's own
    ~/.ssh/config out of the test)."""
    home_ssh = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"
    home_ssh.mkdir(mode=0o700, exist_ok=True)  # the mount point; ssh makes it on first use anyway
    return in_private_mounts({user_ssh: home_ssh}, argv)


def run(user_ssh: Path, program: str, *args, env: dict) -> subprocess.CompletedProcess:
    """An Ansible program (ansible, ansible-inventory) of the venv, with `user_ssh` as ~/.ssh."""
    return subprocess.run(in_user_ssh(user_ssh, [BIN / program, *args]), env=ansible_env(**env),
                          capture_output=True, text=True, timeout=120, check=False)


def write_source(path: Path, **config) -> Path:
    path.write_text(yaml.safe_dump({"plugin": "teuthology.lab.locks", **config}))
    return path


def served_keys(host) -> set[str]:
    return {" ".join((host.workdir / f"ssh_host_{t}_key.pub").read_text().split()[:2]) for t in ("ed25519", "ecdsa")}


def lab_at(tmp_path: Path, host, nodes: dict[str, str], keys: str | None = None):
    """A lock database whose `nodes` (name: owner) are locked vps slots at `host`, with `keys` recorded."""
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    db = f"sqlite:///{tmp_path / 'lab.db'}"
    lab = Lab(db)
    for name, owner in nodes.items():
        fields = {"machine_type": "vps", "vpshost": "mira001.front.sepia.ceph.com", "ssh_host": host.address, "ssh_port": host.port}
        lab.set_node(name, {**fields, **({"ssh_pub_key": keys} if keys else {})}, actor="admin@lab")
        lab.lock(owner=owner, names=[name])
    return db, lab


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


def effective_ssh_config(user_ssh: Path, hostvars: dict, *extra: str) -> dict[str, str]:
    """`ssh -G`: what ssh makes of the host's ssh arguments plus the user's ssh_config."""
    argv = ["ssh", "-G", *shlex.split(hostvars["ansible_ssh_common_args"]), "-o", f"User={hostvars['ansible_user']}",
            "-p", str(hostvars["ansible_port"]), *extra, hostvars["ansible_host"]]
    proc = subprocess.run(in_user_ssh(user_ssh, argv), capture_output=True, text=True, timeout=30, check=True)
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def hostvars_of(user_ssh: Path, source: Path, name: str, env: dict) -> dict:
    proc = run(user_ssh, "ansible-inventory", "-i", source, "--host", name, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout, object_hook=unwrap_unsafe)


@pytest.mark.parametrize("mode", ["known_hosts_command", "known_hosts_file"])
def test_pinned_keys(server, tmp_path, control_dir, user_ssh, mode):
    db, lab = lab_at(tmp_path, server, {NODE: OWNER})
    # The user's ~/.ssh trusts the server's real keys for the node three ways (known_hosts, a
    # KnownHostsCommand, SSHFP records in DNS): if ssh consulted any of them, the wrong-key runs below would pass.
    user_known_hosts = user_ssh / "known_hosts"
    user_known_hosts.write_text("".join(f"{NODE} {key}\n" for key in served_keys(server)))
    (user_ssh / "config").write_text(
        "Host *\n"
        f"    KnownHostsCommand /usr/bin/cat {user_known_hosts}\n"
        "    VerifyHostKeyDNS yes\n"
        "    StrictHostKeyChecking no\n"
    )
    user_ssh_before = {path.name: path.read_bytes() for path in user_ssh.iterdir()}

    home = tmp_path / "home"
    home.mkdir()
    source = write_source(tmp_path / "locks.yml", user="root", host_key_mode=mode, known_hosts_file=str(tmp_path / "pinned_known_hosts"))
    env = {"HOME": str(home), "TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": OWNER,
           "ANSIBLE_PRIVATE_KEY_FILE": str(server.client_key), "ANSIBLE_TIMEOUT": "15"}

    def ping(cp: str, **extra: str) -> subprocess.CompletedProcess:
        return run(user_ssh, "ansible", "all", "-i", source, "-m", "raw", "-a", "echo pinned-$((40+2))",
                   env={**env, "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir / cp), **extra})

    # Record the keys the server serves, as teuthology-lock --update-keys would.
    update = run_playbook(REPO / "playbooks/update_keys.yml", env=env)
    assert update.returncode == 0, update.output
    assert f"host keys changed: {NODE}" in update.output
    assert set(lab.query(names=[NODE])[0]["ssh_pub_key"].splitlines()) == served_keys(server)

    # The host key options ssh ends up with, the user's ssh_config read: the plugin's, every one.
    effective = effective_ssh_config(user_ssh, hostvars_of(user_ssh, source, NODE, env))
    assert effective["verifyhostkeydns"] == "false"
    assert effective["stricthostkeychecking"] == "true"
    assert effective["globalknownhostsfile"] == "/dev/null"
    if mode == "known_hosts_command":
        assert effective["knownhostscommand"].startswith("/usr/bin/printf ")
        assert effective["userknownhostsfile"] == "/dev/null"
    else:
        assert "knownhostscommand" not in effective  # none
        assert effective["userknownhostsfile"] == str(tmp_path / "pinned_known_hosts")

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
    update = run_playbook(REPO / "playbooks/update_keys.yml", "-e", f"owner={OWNER}", env=env)
    assert update.returncode == 0 and f"host keys changed: {NODE}" in update.output, update.output
    assert set(lab.query(names=[NODE])[0]["ssh_pub_key"].splitlines()) == served_keys(server)
    again = ping("cp2")
    assert again.returncode == 0 and "pinned-42" in again.stdout, again.stdout + again.stderr
    update = run_playbook(REPO / "playbooks/update_keys.yml", env=env)
    assert "host keys changed: none" in update.output

    assert {path.name: path.read_bytes() for path in user_ssh.iterdir()} == user_ssh_before
    lab.close()


def test_control_master_is_per_remote_user(server, tmp_path, control_dir, user_ssh):
    db, lab = lab_at(tmp_path, server, {NODE: OWNER}, keys="\n".join(served_keys(server)))
    lab.close()
    source = write_source(tmp_path / "locks.yml", user="root")
    env = {"HOME": str(tmp_path), "TEUTHOLOGY_LAB_DB": db, "ANSIBLE_PRIVATE_KEY_FILE": str(server.client_key),
           "ANSIBLE_TIMEOUT": "15", "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir)}

    def whoami(*args: str) -> subprocess.CompletedProcess:
        return run(user_ssh, "ansible", "all", "-i", source, "-m", "raw", "-a", "id -un", *args, env=env)

    as_root = whoami()
    assert as_root.returncode == 0 and "CHANGED" in as_root.stdout, as_root.stdout + as_root.stderr
    assert "root" in as_root.stdout.split(">>", 1)[1].split(), as_root.stdout
    # ssh named the master by the remote user and port it connected with.
    (master,) = control_dir.iterdir()
    assert master.is_socket() and master.name.startswith("tlab-") and master.name.endswith(f"-root@{server.port}"), master.name
    hostvars = hostvars_of(user_ssh, source, NODE, env)
    control_path = hostvars["ansible_control_path"] % {"directory": control_dir}  # what Ansible does to it
    assert effective_ssh_config(user_ssh, hostvars, "-o", f"ControlPath={control_path}")["controlpath"] == str(master)

    # The same host as postgres, whose key is not authorized (sshd reads the shared authorized_keys file
    # as the user, who cannot enter pytest's private temporary directory): no master to ride on, refused.
    as_postgres = whoami("-e", "ansible_user=postgres")
    assert as_postgres.returncode != 0, as_postgres.stdout
    assert "UNREACHABLE" in as_postgres.stdout and "postgres@" in as_postgres.stdout, as_postgres.stdout
    assert "Permission denied" in as_postgres.stdout, as_postgres.stdout
    assert "CHANGED" not in as_postgres.stdout
    # Another port, where nothing listens: no master to ride on either.
    other_port = whoami("-e", "ansible_port=1")
    assert other_port.returncode != 0 and "UNREACHABLE" in other_port.stdout, other_port.stdout
    assert "Connection refused" in other_port.stdout and "CHANGED" not in other_port.stdout, other_port.stdout
    # root's master was there all along, and still serves root.
    assert [path.name for path in control_dir.iterdir()] == [master.name]
    assert whoami().returncode == 0


def test_each_source_has_its_own_known_hosts_file(server, tmp_path, control_dir, user_ssh):
    db, lab = lab_at(tmp_path, server, {NODE: OWNER, OTHER_NODE: OTHER_OWNER}, keys="\n".join(served_keys(server)))
    lab.close()
    home = tmp_path / "home"
    home.mkdir()
    # Two sources with other filters, neither naming a known_hosts file: the default one for each.
    mine = write_source(tmp_path / "a_locks.yml", owner=OWNER, user="root", host_key_mode="known_hosts_file")
    theirs = write_source(tmp_path / "b_locks.yml", owner=OTHER_OWNER, user="root", host_key_mode="known_hosts_file")
    env = {"HOME": str(home), "TEUTHOLOGY_LAB_DB": db, "ANSIBLE_PRIVATE_KEY_FILE": str(server.client_key),
           "ANSIBLE_TIMEOUT": "15", "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir)}

    def known_hosts_file(source: Path, name: str) -> Path:
        args = shlex.split(hostvars_of(user_ssh, source, name, env)["ansible_ssh_common_args"])
        (path,) = [arg.split("=", 1)[1] for arg in args if arg.startswith("UserKnownHostsFile=")]
        return Path(path)

    def pinned_lines(name: str) -> set[str]:
        return {f"{name} {key}" for key in served_keys(server)}

    def ping(*sources: Path) -> subprocess.CompletedProcess:
        sources_args = [arg for source in sources for arg in ("-i", source)]
        return run(user_ssh, "ansible", "all", *sources_args, "-m", "raw", "-a", "echo pinned-$((40+2))", env=env)

    # Both sources in one run.
    both = run(user_ssh, "ansible-inventory", "-i", mine, "-i", theirs, "--list", env=env)
    assert both.returncode == 0, both.stderr
    paths = {NODE: known_hosts_file(mine, NODE), OTHER_NODE: known_hosts_file(theirs, OTHER_NODE)}
    assert paths[NODE] != paths[OTHER_NODE]
    for name, path in paths.items():
        assert path.parent == home / ".cache" / "teuthology-lab" and path.name.startswith("known_hosts-"), path
        assert set(path.read_text().splitlines()) == pinned_lines(name)
    pinged = ping(mine, theirs)
    assert pinged.returncode == 0 and pinged.stdout.count("pinned-42") == 2, pinged.stdout + pinged.stderr

    # One after the other, as two runs with other filters would: neither overwrites the other's file.
    for source in (mine, theirs):
        alone = run(user_ssh, "ansible-inventory", "-i", source, "--list", env=env)
        assert alone.returncode == 0, alone.stderr
    assert {name: known_hosts_file(source, name) for name, source in ((NODE, mine), (OTHER_NODE, theirs))} == paths
    for name, path in paths.items():
        assert set(path.read_text().splitlines()) == pinned_lines(name)
    for source in (mine, theirs):
        pinged = ping(source)
        assert pinged.returncode == 0 and "pinned-42" in pinged.stdout, pinged.stdout + pinged.stderr
