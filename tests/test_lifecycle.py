"""Lifecycle on the local lab (real sshd vpshosts, libvirt, VMs): runs killed
mid-create, stale runs, an unreachable vpshost, leases that end, and the
reaper. Every test ends with each slot consistent: free with no domain and no
VM state, or locked with its VM running and its keys recorded."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from lab import cleanup_domains, free_port, keyscan, lab_domains
from support.ansible_run import BIN, REPO, ansible_env, run_playbook, run_tasks, task
from support.seed import snapshot
from support.vm_slots import DOMAIN, slots_database, start_vm_lab

OWNER = "alice@laptop"
# Slot names of their own, so that these tests' domains are not the other files' (vpm001...).
SLOTS = {"vpl001": "vpshost1", "vpl002": "vpshost1", "vpl003": "vpshost2", "vpl004": "vpshost2"}
# Longer than a create of the lab's busybox guest takes here.
CREATE_SECONDS = 45


@pytest.fixture(scope="module")
def vm_lab(tmp_path_factory):
    yield from start_vm_lab(tmp_path_factory, SLOTS, "lifecycle")


@pytest.fixture
def slots(vm_lab, tmp_path):
    yield from slots_database(*vm_lab[:2], SLOTS, tmp_path)


def extra_args(**extra_vars):
    pairs = [json.dumps({key: value}) if isinstance(value, dict | list) else f"{key}={value}" for key, value in extra_vars.items()]
    return [a for p in pairs for a in ("-e", p)]


def playbook(name, db, extra, inventory, *args, owner=OWNER, **extra_vars):
    return run_playbook(REPO / "playbooks" / name, "-i", inventory, "-e", f"@{extra}", *args, *extra_args(**extra_vars),
                        env={"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": owner})


def start_playbook(name, db, extra, inventory, **extra_vars) -> subprocess.Popen:
    """ansible-playbook in the background, in a process group of its own (to be killed)."""
    return subprocess.Popen(
        [BIN / "ansible-playbook", REPO / "playbooks" / name, "-i", inventory, "-e", f"@{extra}", *extra_args(**extra_vars)],
        env=ansible_env(TEUTHOLOGY_LAB_DB=db, TEUTHOLOGY_LAB_OWNER=OWNER),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, start_new_session=True,
    )


def create_running(short: str) -> Path:
    """The file in which a running create of VM ``short`` names its process group (root's home is the vpshosts')."""
    from ansible_collections.teuthology.lab.plugins.module_utils.downburst import create_record

    return Path(create_record("/root", "qemu:///system", short))


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def assert_consistent(handle, ports) -> None:
    """Each slot free with no domain and no VM state, or locked with its VM running and its keys recorded."""
    domains = lab_domains()
    for node in handle.query():
        short = node["name"].split(".")[0]
        if not node["locked"]:
            assert short not in domains and node["vm_state"] is None, node
        else:
            assert short in domains and node["vm_state"] == "running", node
            served = {f"{key_type} {blob}" for key_type, blob in keyscan(ports[short])}
            assert set(node["ssh_pub_key"].splitlines()) == served, node


def cut_off(vpshost) -> None:
    """The vpshost stops answering: its sshd, and every SSH session it serves (Ansible's live
    ControlMasters would outlive the listener), are killed; what the sessions started goes on."""
    namespace = os.readlink(f"/proc/{vpshost.pid}/ns/mnt")
    sessions = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/mnt") == namespace and Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                sessions.append(int(pid))
        except OSError:
            continue
    vpshost.stop()
    for pid in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def reap(db, extra, inventory, *args, **extra_vars):
    run = playbook("reap.yml", db, extra, inventory, *args, owner="reaper@lab", **extra_vars)
    assert run.returncode == 0, run.output[-4000:]
    return run, run.result("Say what was done, by vpshost")["lab_reaped.report"]


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_run_killed_mid_create_leaves_no_vm_on_a_free_slot(vm_lab, slots, how):
    ports, inventory = vm_lab[1:]
    handle, db, extra = slots
    name = "vpl001" + DOMAIN
    proc = start_playbook("lock.yml", db, extra, inventory, names=name)
    try:
        wait_for(create_running("vpl001").exists, 120, "the create to start on the vpshost")
        os.killpg(proc.pid, getattr(signal, how))
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    node = handle.query(names=[name])[0]
    assert node["locked"] and node["vm_state"] == "creating", node

    run = playbook("unlock.yml", db, extra, inventory, names=name)
    assert run.returncode == 0, run.output[-4000:]
    assert run.result("Destroy the VM on its vpshost")["ended_create"] is True  # the create was still running
    assert handle.query(names=[name])[0]["locked"] is False
    time.sleep(CREATE_SECONDS)  # long after the create would have finished
    assert "vpl001" not in lab_domains()

    report = reap(db, extra, inventory)[1]
    assert not any("destroy" in entry for entry in report.values()), report  # no orphan left to reap
    assert_consistent(handle, ports)


def test_a_run_cancelled_through_ansible_runner(vm_lab, slots, tmp_path):
    """As AWX cancels a job: ansible-runner's cancel callback ends ansible-playbook."""
    import ansible_runner

    ports, inventory = vm_lab[1:]
    handle, db, extra = slots
    name = "vpl002" + DOMAIN
    started = create_running("vpl002")
    (tmp_path / "runner").mkdir()
    runner = ansible_runner.run(
        private_data_dir=str(tmp_path / "runner"), playbook=str(REPO / "playbooks" / "lock.yml"), inventory=str(inventory),
        extravars={"names": name, **json.loads(extra.read_text())},
        envvars=ansible_env(TEUTHOLOGY_LAB_DB=db, TEUTHOLOGY_LAB_OWNER=OWNER), cancel_callback=started.exists, quiet=True,
    )
    assert runner.status == "canceled", runner.status
    assert handle.query(names=[name])[0]["vm_state"] == "creating"
    run = playbook("unlock.yml", db, extra, inventory, names=name)
    assert run.returncode == 0, run.output[-4000:]
    time.sleep(CREATE_SECONDS)
    assert "vpl002" not in lab_domains() and handle.query(names=[name])[0]["locked"] is False
    assert_consistent(handle, ports)


def test_a_stale_run_touches_nothing_of_the_new_holder(vm_lab, slots):
    ports, inventory = vm_lab[1:]
    handle, db, extra = slots
    name = "vpl003" + DOMAIN
    run = playbook("lock.yml", db, extra, inventory, names=name)
    assert run.returncode == 0, run.output[-4000:]
    stale = handle.query(names=[name])[0]  # what alice's run holds

    # An admin frees it (its VM destroyed), bob locks it again and gets a new VM.
    run = playbook("unlock.yml", db, extra, inventory, names=name, force="true", owner="admin@lab")
    assert run.returncode == 0, run.output[-4000:]
    run = playbook("lock.yml", db, extra, inventory, names=name, owner="bob@desk")
    assert run.returncode == 0, run.output[-4000:]
    bobs = handle.query(names=[name])[0]
    assert bobs["lock_token"] != stale["lock_token"] and bobs["ssh_pub_key"] != stale["ssh_pub_key"]

    # alice's run goes on as if nothing happened: records keys, destroys its VM, unlocks.
    run = run_tasks([
        task("node", "keys", ignore_errors=True, db=db, name=name, ssh_pub_key=stale["ssh_pub_key"], lock_token=stale["lock_token"],
             owner=OWNER),
        task("unlock", "unlock", ignore_errors=True, db=db, names=[name], owner=OWNER, force=True,
             lock_tokens={name: stale["lock_token"]}),
    ])
    for step in ("keys", "unlock"):
        assert f"lock_token: the lock on {name} changed" in run.result(step)["msg"]
    destroy = Path(extra).with_name("stale_destroy.yml")
    destroy.write_text(yaml.safe_dump([{
        "name": "A stale run destroys its VM", "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": "teuthology.lab.downburst", "vars": {"downburst_state": "absent", "downburst_node": stale}}],
    }]))
    run = run_playbook(destroy, "-i", inventory, env={"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": OWNER})
    assert run.returncode != 0 and f"lock_token: the lock on {name} changed" in run.output, run.output[-3000:]

    after = handle.query(names=[name])[0]
    assert {k: after[k] for k in ("locked_by", "lock_token", "ssh_pub_key", "vm_state")} == {
        k: bobs[k] for k in ("locked_by", "lock_token", "ssh_pub_key", "vm_state")}
    assert "vpl003" in lab_domains()
    assert {f"{t} {b}" for t, b in keyscan(ports["vpl003"])} == set(bobs["ssh_pub_key"].splitlines())
    assert_consistent(handle, ports)


def test_an_unreachable_vpshost_mid_poll(vm_lab, slots, tmp_path):
    """The vpshost's sshd stops while the create is polled: the node is noted, marked down and
    stays locked (its VM's state is unknown), and the controller forgets the private keys.
    (Its only node failing, lock.yml ends there: the role's own tasks show what it held.)"""
    lab, ports = vm_lab[:2]
    handle, db, extra = slots
    (vpshost3,) = lab.start_vpshosts(1)
    name = "vpl005" + DOMAIN
    ports["vpl005"] = free_port()
    lab.set_slots(ports)
    handle.set_node(name, {"machine_type": "vps", "vpshost": vpshost3.name, "ssh_host": "127.0.0.1", "ssh_port": ports["vpl005"]},
                    actor="admin@lab")
    inventory3 = tmp_path / "vpshosts.yml"
    inventory3.write_text(yaml.safe_dump({"all": {"hosts": lab.inventory()}}))
    stopper = threading.Thread(target=lambda: (wait_for(create_running("vpl005").exists, 120, "the create"), cut_off(vpshost3)))
    stopper.start()
    try:
        run = run_playbook(REPO / "playbooks" / "lock.yml", "-i", inventory3, "-e", f"@{extra}", "-e", f"names={name}",
                           "-e", "downburst_poll_interval=2", env={"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": OWNER})
    finally:
        stopper.join(timeout=180)
    node = handle.query(names=[name])[0]
    assert node["locked"] is True and node["up"] is False, (node, run.output[-6000:])
    notes = [e["details"]["note"] for e in handle.history([name]) if e["action"] == "note"]
    assert len(notes) == 1 and f"vpshost {vpshost3.name} unreachable" in notes[0], notes
    assert "failed at step 'Create the VM on its vpshost, waiting for downburst'" in notes[0], notes
    # The role's "always" ran although the vpshost was lost: the run holds no private key any more.
    forgot = run.result("Forget the private host keys")
    assert not forgot["failed"] and forgot["ansible_facts"]["downburst_new_host_keys"] == {}, forgot
    assert "PRIVATE KEY" not in run.output
    cleanup_domains(names=["vpl005"])


def test_leases_that_end_are_reaped_and_extended_ones_are_not(vm_lab, slots):
    ports, inventory = vm_lab[1:]
    handle, db, extra = slots
    short_lease, extended = "vpl001" + DOMAIN, "vpl003" + DOMAIN
    run = playbook("lock.yml", db, extra, inventory, names=extended, lease="10m")
    assert run.returncode == 0, run.output[-4000:]
    run = playbook("lock.yml", db, extra, inventory, names=short_lease, lease="20s")
    assert run.returncode == 0, run.output[-4000:]
    run = playbook("extend.yml", db, extra, inventory, names=extended, lease="1h")  # long before its 10 minutes end
    assert run.returncode == 0, run.output[-4000:]
    assert run.result("Extend the leases")["extended"] == [extended]
    lease_end = handle.query(names=[short_lease])[0]["lease_expires"]
    wait_for(lambda: handle.query(expired=True), 60, "the short lease to end")

    run, report = reap(db, extra, inventory)
    assert report["vpshost1"]["destroy"] == [short_lease] and report["vpshost1"]["unlocked"] == [short_lease], report
    assert "vpl001" not in lab_domains() and "vpl003" in lab_domains()
    node = handle.query(names=[short_lease])[0]
    assert node["locked"] is False and node["vm_state"] is None
    reaped = [e for e in handle.history([short_lease]) if e["action"] == "reap"]
    assert [e["details"]["step"] for e in reaped] == ["destroy", "unlock"]
    assert reaped[1]["details"]["reason"] == f"lease of {OWNER} ended at {lease_end}"
    assert [e["action"] for e in handle.history([extended])].count("extend") == 1
    assert_consistent(handle, ports)


def test_the_reaper_in_check_mode_changes_nothing_then_reaps(vm_lab, slots):
    """An orphan domain (free slot), a domain that is no slot's, a locked slot whose VM is gone
    and one whose lease ended: check mode reports them and changes nothing; a real run reaps."""
    lab, ports, inventory = vm_lab
    handle, db, extra = slots
    gone, ended, orphan = "vpl001" + DOMAIN, "vpl003" + DOMAIN, "vpl004" + DOMAIN
    run = playbook("lock.yml", db, extra, inventory, names=f"{gone},{ended},{orphan}")
    assert run.returncode == 0, run.output[-4000:]
    handle.set_node(ended, {"lease_expires": "2026-01-01T00:00:00Z"}, actor="admin@lab")
    handle.unlock(owner=OWNER, names=[orphan])  # the unlock module alone: the VM stays, on a free slot
    cleanup_domains(names=["vpl001"])  # the VM of a locked slot disappears behind the lab's back
    vpshost1 = lab.vpshosts[0]
    stranger = vpshost1.run(["downburst", "-c", "qemu:///system", "create", "--wait", "--nokey", "stranger"])
    assert stranger.returncode == 0, stranger.stderr
    try:
        before = snapshot(handle), lab_domains()
        planned = reap(db, extra, inventory, "--check")[1]
        assert snapshot(handle) == before[0] and lab_domains() == before[1]
        assert planned["vpshost1"]["marked_down"] == [gone]
        assert sorted(planned["vpshost2"]["destroy"]) == [ended, orphan]
        assert "stranger" in planned["vpshost1"]["unknown_domains"]

        report = reap(db, extra, inventory)[1]
        assert sorted(report["vpshost2"]["destroy"]) == [ended, orphan] and report["vpshost2"]["unlocked"] == [ended]
        assert report["vpshost1"]["marked_down"] == [gone]
        domains = lab_domains()
        assert "vpl003" not in domains and "vpl004" not in domains and "stranger" in domains
        nodes = {node["name"]: node for node in handle.query()}
        assert (nodes[gone]["locked"], nodes[gone]["up"], nodes[gone]["vm_state"]) == (True, False, None)
        assert nodes[ended]["locked"] is False and nodes[orphan]["vm_state"] is None
        actions = {e["node"]: e["action"] for e in handle.history() if e["action"] in ("reap", "note")}
        assert actions[ended] == "reap" and actions[orphan] == "reap" and actions[gone] == "note"

        # A second run finds nothing more to do.
        again = reap(db, extra, inventory)[1]
        assert not any(key in entry for entry in again.values() for key in ("destroy", "unlocked", "marked_down")), again
    finally:
        cleanup_domains(names=["stranger"])
    handle.set_node(gone, {"up": True}, actor="admin@lab")
    handle.unlock(owner=OWNER, names=[gone])
    assert_consistent(handle, ports)
