"""downburst run on the controller, as teuthology runs it: `downburst -c
VPSHOST_SHORTNAME`, the libvirt URI alias that playbooks/libvirt_aliases.yml
writes, over libvirt's own qemu+ssh transport to a vpshost of the local lab
(a real sshd; virt-ssh-helper there reaches the lab's libvirtd).

The controller's configuration is the test's own: a private mount namespace
binds its files over root's ~/.ssh (the ssh client libvirt runs reads it) and
over /etc/libvirt (root's libvirt.conf, the only one libvirt reads for root);
the machine's own files are neither read nor changed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lab import Lab as VMLab
from lab import cleanup_domains, free_port, install_downburst, keyscan, lab_domains
from support.ansible_run import BIN, REPO, ansible_env
from support.mounts import in_private_mounts

OWNER = "alice@laptop"
DOMAIN = ".front.sepia.ceph.com"
SLOT = "vpc001"


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    """The lab's vpshost1, the stand-in on the controller's PATH, and the controller's ssh and libvirt configuration."""
    tmp = tmp_path_factory.mktemp("controller")
    with VMLab() as lab:
        (vpshost,) = lab.start_vpshosts(1)
        port = free_port()
        lab.set_slots({SLOT: port})
        install_downburst(tmp / "bin" / "downburst", lab.standin_config)
        ssh = tmp / "ssh"
        ssh.mkdir(mode=0o700)
        (ssh / "config").write_text(
            f"Host {vpshost.name}\n  HostName {vpshost.address}\n  Port {vpshost.port}\n  IdentityFile {lab.client_key}\n"
            f"  UserKnownHostsFile {lab.known_hosts()}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
        )
        (tmp / "etc_libvirt").mkdir()
        yield lab, vpshost, port, tmp
        cleanup_domains(names=[SLOT])


def run_on_controller(tmp: Path, playbook: str, db: str, *extra: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """ansible-playbook with the test's ssh and libvirt configuration; (the process, its task results)."""
    binds = {tmp / "ssh": Path("/root/.ssh"), tmp / "etc_libvirt": Path("/etc/libvirt")}
    Path("/root/.ssh").mkdir(mode=0o700, exist_ok=True)  # the mount point
    argv = [BIN / "ansible-playbook", REPO / "playbooks" / playbook, *[a for e in extra for a in ("-e", e)]]
    results = tmp / "results.jsonl"
    results.write_text("")
    env = ansible_env(TEUTHOLOGY_LAB_DB=db, TEUTHOLOGY_LAB_OWNER=OWNER, TLAB_RESULTS=str(results))
    env["PATH"] = f"{tmp / 'bin'}:{env['PATH']}"  # downburst found on the controller's PATH
    proc = subprocess.run(in_private_mounts(binds, argv), env=env, capture_output=True, text=True, timeout=900, cwd=REPO,
                          check=False)
    return proc, [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def test_downburst_on_the_controller_with_a_libvirt_uri_alias(controller, tmp_path):
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    lab, vpshost, port, tmp = controller
    db = f"sqlite:///{tmp_path / 'lab.db'}"
    handle = Lab(db)
    name = SLOT + DOMAIN
    handle.set_node(name, {"machine_type": "vps", "vpshost": vpshost.name, "ssh_host": "127.0.0.1", "ssh_port": port}, actor="admin@lab")
    keys = json.dumps({"downburst_authorized_keys": [lab.client_pubkey.read_text().strip()], "downburst_runs_on": "controller"})

    run, _ = run_on_controller(tmp, "libvirt_aliases.yml", db, "libvirt_user=root")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f'"{vpshost.name}=qemu+ssh://root@{vpshost.name}/system?no_tty=1"' in (tmp / "etc_libvirt/libvirt.conf").read_text()

    run, results = run_on_controller(tmp, "lock.yml", db, keys, f"names={name}")
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    (created,) = [entry["result"] for entry in results if entry["task"] == "Create the VM on its vpshost, waiting for downburst"]
    assert created["executable"] == str(tmp / "bin" / "downburst")  # the controller's
    assert created["commands"][0][1:4] == ["-c", vpshost.name, "create"]
    node = handle.query(names=[name])[0]
    assert node["locked"] and node["vm_state"] == "running"
    assert SLOT in lab_domains()  # made by libvirtd, reached through the vpshost's sshd
    assert set(node["ssh_pub_key"].splitlines()) == {f"{t} {b}" for t, b in keyscan(port)}

    # A vpshost added since the aliases were written has none: a clear error naming where libvirt reads them.
    handle.set_node("vpc002" + DOMAIN, {"machine_type": "vps", "vpshost": "vpshost9"}, actor="admin@lab")
    run, _ = run_on_controller(tmp, "lock.yml", db, keys, f"names=vpc002{DOMAIN}")
    assert run.returncode != 0
    assert "no uri_aliases entry 'vpshost9' in /etc/libvirt/libvirt.conf (playbooks/libvirt_aliases.yml writes them)" in run.stdout

    run, _ = run_on_controller(tmp, "unlock.yml", db, keys, f"names={name}")
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    assert SLOT not in lab_domains() and handle.query(names=[name])[0]["locked"] is False
    handle.close()
