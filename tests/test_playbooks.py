"""playbooks/lock.yml, unlock.yml, list.yml, summary.yml as a user runs them
(extra vars as strings, the way a survey or -e sends them)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from support.ansible_run import BIN, REPO, ansible_env, run_playbook
from support.mounts import in_private_mounts
from support.seed import seed


def play(name: str, db_url: str, *extra: str, owner: str = "alice@laptop"):
    args = [arg for pair in extra for arg in ("-e", pair)]
    return run_playbook(REPO / "playbooks" / name, *args, env={"TEUTHOLOGY_LAB_DB": db_url, "TEUTHOLOGY_LAB_OWNER": owner})


def test_lock_list_summary_unlock(db_url, lab, tmp_path):
    smithi = seed(lab, "smithi", 3)
    seed(lab, "mira", 2)
    lab.set_node(smithi[0], {"ssh_pub_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"},
                 actor="admin@lab")
    targets_file = tmp_path / "targets.yml"
    run = play("lock.yml", db_url, "count=2", "machine_type=smithi", "description=run-7", "lease=2h", f"targets_file={targets_file}")
    assert run.returncode == 0, run.output
    targets = yaml.safe_load(targets_file.read_text())["targets"]
    nodes = {node["name"]: node for node in lab.query(locked=True)}
    assert targets == {f"ubuntu@{name}": node["ssh_pub_key"] for name, node in nodes.items()}
    assert sorted(nodes) == smithi[:2]
    assert all(node["locked_by"] == "alice@laptop" and node["description"] == "run-7" for node in nodes.values())
    assert "ubuntu@" + smithi[0] in run.output  # printed too

    run = play("lock.yml", db_url, "count=5", "machine_type=smithi,mira")
    assert run.returncode != 0
    assert "requested 5 smithi nodes, 1 free; requested 5 mira nodes, 2 free" in run.output

    run = play("list.yml", db_url, "owner=alice@laptop")
    assert run.returncode == 0
    assert [n["name"] for n in run.result("Query the lock database")["nodes"]] == smithi[:2]

    run = play("summary.yml", db_url)
    summary = run.result("Show the summary")["msg"]
    assert summary[:3] == [
        "TYPE          TOTAL     UP LOCKED   FREE  EXPIRED   VMS:NEW  RUNNING   FAILED",
        "mira              2      2      0      2        0         0        0        0",
        "smithi            3      3      2      1        0         0        0        0",
    ]
    soonest = min(nodes.values(), key=lambda node: node["lease_expires"])
    assert summary[3] == f"next lease to end: {soonest['name']} at {soonest['lease_expires']}"

    run = play("unlock.yml", db_url, f"names={smithi[0]}", owner="bob@desk")
    assert run.returncode != 0 and f"node {smithi[0]} is locked by alice@laptop" in run.output
    run = play("unlock.yml", db_url, "all=true")
    assert run.returncode == 0
    assert run.result("Unlock the nodes whose VMs are gone")["unlocked"] == smithi[:2]
    assert lab.query(locked=True) == []


def public_key(tmp_path, key_type: str) -> str:
    """A real public key of that type (ssh-keygen), as ``TYPE BASE64``."""
    path = tmp_path / f"key-{key_type}-{len(list(tmp_path.glob('key-*')))}"
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(path)], check=True, timeout=60)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def test_list_targets_in_teuthology_format(db_url, lab, tmp_path):
    vps = seed(lab, "vps", 4, "vpm", vpshost="mira001.front.sepia.ceph.com")
    smithi = seed(lab, "smithi", 1)
    ed25519, ecdsa, rsa = (public_key(tmp_path, key_type) for key_type in ("ed25519", "ecdsa", "rsa"))
    # All recorded keys, in the order the database keeps them (sorted): one key per target, ed25519 first.
    recorded = {vps[0]: f"{rsa}\n{ed25519}\n{ecdsa}", vps[1]: f"{rsa}\n{ecdsa}", vps[2]: rsa, vps[3]: public_key(tmp_path, "ed25519")}
    for name, keys in recorded.items():
        lab.set_node(name, {"ssh_pub_key": keys}, actor="admin@lab")
    lab.lock(owner="alice@laptop", names=vps[:3] + smithi, description="run-5")
    lab.lock(owner="bob@desk", names=[vps[3]], description="run-6")

    targets_file = tmp_path / "targets.yml"
    run = play("list_targets.yml", db_url, "owner=alice@laptop", "machine_type=vps", f"targets_file={targets_file}")
    assert run.returncode == 0, run.output
    written = yaml.safe_load(targets_file.read_text())
    assert written == {"targets": {f"ubuntu@{vps[0]}": ed25519, f"ubuntu@{vps[1]}": ecdsa, f"ubuntu@{vps[2]}": rsa}}
    assert len(lab.query(names=[vps[0]])[0]["ssh_pub_key"].splitlines()) == 3  # the database keeps them all
    assert run.result("Show the targets")["msg"] == written
    # One line per target, however long the key.
    assert len(targets_file.read_text().splitlines()) == 4

    run = play("list_targets.yml", db_url, "description=run-", "targets_bare=true")
    shown = run.result("Show the targets")["msg"]
    assert shown == {"targets": {vps[0]: ed25519, vps[1]: ecdsa, vps[2]: rsa, vps[3]: recorded[vps[3]], smithi[0]: None}}


def test_blank_values_mean_unset(db_url, lab):
    """"" and null, as an AWX survey sends an optional field left blank; false still filters."""
    smithi = seed(lab, "smithi", 3)
    lab.lock(owner="alice@laptop", names=smithi[:1], description="run-8")
    listed = {}
    for label, extra in (("unset", {}), ("empty", {"locked": "", "up": "", "owner": "", "description": ""}),
                         ("null", {"locked": None, "up": None, "owner": None, "description": None}),
                         ("free", {"locked": False}), ("locked", {"locked": "true", "owner": ""})):
        run = play("list.yml", db_url, json.dumps(extra))
        assert run.returncode == 0, (label, run.output)
        listed[label] = [node["name"] for node in run.result("Query the lock database")["nodes"]]
    assert listed == {"unset": smithi, "empty": smithi, "null": smithi, "free": smithi[1:], "locked": smithi[:1]}

    run = play("lock.yml", db_url, json.dumps({"count": 1, "machine_type": "smithi", "os_type": "", "os_version": None,
                                               "arch": "", "description": "", "lease": None, "targets_file": "",
                                               "targets_user": None, "names": ""}))
    assert run.returncode == 0, run.output
    assert run.result("Show the targets")["msg"] == {"targets": {f"ubuntu@{smithi[1]}": None}}
    run = play("unlock.yml", db_url, json.dumps({"all": "true", "names": "", "force": None, "owner": ""}))
    assert run.returncode == 0, run.output
    assert lab.query(locked=True) == []


def test_libvirt_aliases(db_url, lab, tmp_path):
    """Written where libvirt's client reads them: for root (the tests' user) the system's
    libvirt.conf, here in a directory of the test's bound over /etc/libvirt; or the file named."""
    seed(lab, "vps", 2, "vpm", vpshost="mira001.front.sepia.ceph.com")
    seed(lab, "vps", 1, "vpx", vpshost="mira002.front.sepia.ceph.com")
    seed(lab, "smithi", 1)
    (tmp_path / "etc_libvirt").mkdir()
    system_conf = tmp_path / "etc_libvirt/libvirt.conf"
    system_conf.write_text('uri_default = "qemu:///system"\n')

    def aliases(*extra: str):
        args = [arg for pair in extra for arg in ("-e", pair)]
        argv = in_private_mounts({system_conf.parent: Path("/etc/libvirt")},
                                 [BIN / "ansible-playbook", REPO / "playbooks/libvirt_aliases.yml", *args])
        return subprocess.run(argv, env=ansible_env(TEUTHOLOGY_LAB_DB=db_url), capture_output=True, text=True, timeout=300,
                              cwd=REPO, check=False)

    system_before = Path("/etc/libvirt/libvirt.conf").read_text()
    run = aliases("libvirt_user=teuthology")
    assert run.returncode == 0, run.stdout + run.stderr
    text = system_conf.read_text()
    assert text.startswith('uri_default = "qemu:///system"\n')
    assert (
        "uri_aliases = [\n"
        '  "mira001=qemu+ssh://teuthology@mira001.front.sepia.ceph.com/system?no_tty=1",\n'
        '  "mira002=qemu+ssh://teuthology@mira002.front.sepia.ceph.com/system?no_tty=1",\n'
        "]\n"
    ) in text
    assert "changed=0" in aliases("libvirt_user=teuthology").stdout  # a second run changes nothing
    assert system_conf.read_text() == text
    assert Path("/etc/libvirt/libvirt.conf").read_text() == system_before  # the machine's own file is untouched
    named = tmp_path / "home/.libvirt/libvirt.conf"
    run = aliases(f"libvirt_conf={named}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "mira001=qemu+ssh://ubuntu@mira001.front.sepia.ceph.com/system?no_tty=1" in named.read_text()
    # The module resolves aliases where libvirt reads them.
    from ansible_collections.teuthology.lab.plugins.module_utils.downburst import libvirt_conf_files

    user_files = ["/home/alice/.config/libvirt/libvirt.conf", "/home/alice/.libvirt/libvirt.conf"]
    assert libvirt_conf_files("/home/alice", root=False) == user_files
    assert libvirt_conf_files("/root", root=True) == ["/etc/libvirt/libvirt.conf"]
