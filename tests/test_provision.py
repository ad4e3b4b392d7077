"""VM provisioning end to end on the local lab: real sshd vpshosts, real libvirt
and QEMU, the downburst stand-in; lock.yml / unlock.yml through ansible-playbook."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lab import keyscan, lab_domains
from support.ansible_run import BIN, REPO, ansible_env, run_playbook, run_tasks, task
from support.vm_slots import DOMAIN, slots_database, start_vm_lab

OWNER = "alice@laptop"
# Two VM slots on each of two vpshosts.
SLOTS = {"vpm001": "vpshost1", "vpm002": "vpshost1", "vpm003": "vpshost2", "vpm004": "vpshost2"}


@pytest.fixture(scope="module")
def vm_lab(tmp_path_factory):
    yield from start_vm_lab(tmp_path_factory, SLOTS, "provision")


@pytest.fixture
def slots(vm_lab, tmp_path):
    """A fresh lock database with the four VM slots; every test leaves no domain behind."""
    yield from slots_database(*vm_lab[:2], SLOTS, tmp_path)


def playbook(name, db, extra, inventory, *args, **extra_vars):
    pairs = [json.dumps({key: value}) if isinstance(value, dict) else f"{key}={value}" for key, value in extra_vars.items()]
    return run_playbook(
        REPO / "playbooks" / name, "-i", inventory, "-e", f"@{extra}", *args, *[a for p in pairs for a in ("-e", p)],
        env={"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": OWNER},
    )


def served(port: int) -> set[str]:
    """The host keys a VM serves, scanned independently of the collection."""
    return {f"{key_type} {blob}" for key_type, blob in keyscan(port)}


def recorded(handle, short: str) -> set[str]:
    return set((handle.query(names=[short + DOMAIN])[0]["ssh_pub_key"] or "").splitlines())


@pytest.mark.parametrize("host_keys", ["inject", "scan"])
def test_lock_provision_run_unlock(vm_lab, slots, tmp_path, host_keys):
    lab, ports, inventory = vm_lab
    handle, db, extra = slots
    targets_file = tmp_path / "targets.yml"
    run = playbook("lock.yml", db, extra, inventory, count=3, machine_type="vps", os_type="debian", os_version="12",
                   description="run-1", targets_file=targets_file, downburst_host_keys=host_keys)
    assert run.returncode == 0, run.output
    locked = ["vpm001", "vpm002", "vpm003"]
    assert set(lab_domains()) & set(SLOTS) == set(locked)
    for short in locked:
        keys = served(ports[short])
        assert keys and recorded(handle, short) == keys, short
        if host_keys == "inject":
            assert {key.split()[0] for key in keys} == {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}
    if host_keys == "inject":
        # The private host keys are gone from controller and vpshost (here the same machine) once create returned:
        # no file holds the meta-data that went with them (this run's client key), nor a private key.
        client_key = lab.client_pubkey.read_text().split()[1]
        assert [files_holding(vpshost, client_key, besides=lab.run_dir) for vpshost in lab.vpshosts] == [[], []]
        leftovers = subprocess.run(["grep", "-rl", "PRIVATE KEY", *[str(Path.home() / d) for d in (".ansible/tmp", ".ansible_async")]],
                                   capture_output=True, text=True, check=False)
        assert leftovers.stdout == "", leftovers.stdout
    targets = yaml.safe_load(targets_file.read_text())["targets"]
    # One key per target, the ed25519 one (teuthology reads one); the database keeps them all.
    assert targets == {f"ubuntu@{n['name']}": next(key for key in n["ssh_pub_key"].splitlines() if key.startswith("ssh-ed25519 "))
                       for n in handle.query(locked=True)}
    assert run.result("Count the VMs installed")["msg"][0] == INSTALLED[host_keys].format(count="3 VMs were")

    # A command on each VM over SSH, strict checking against the recorded keys (the inventory plugin pins them).
    source = tmp_path / "locks.yml"
    source.write_text("plugin: teuthology.lab.locks\nuser: root\n")
    ran = subprocess.run(
        [BIN / "ansible", "all", "-i", source, "-m", "raw", "-a", "echo ran-$((6*7))"],
        env=ansible_env(TEUTHOLOGY_LAB_DB=db, TEUTHOLOGY_LAB_OWNER=OWNER, ANSIBLE_PRIVATE_KEY_FILE=str(lab.client_key),
                        ANSIBLE_HOST_KEY_CHECKING="False"),
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.count("ran-42") == 3

    before = recorded(handle, "vpm001")
    run = playbook("unlock.yml", db, extra, inventory, all="true")
    assert run.returncode == 0, run.output
    assert not set(lab_domains()) & set(SLOTS)
    assert handle.query(locked=True) == []

    # The same slot again: a new VM, a new host key on record.
    run = playbook("lock.yml", db, extra, inventory, names="vpm001" + DOMAIN, downburst_host_keys=host_keys)
    assert run.returncode == 0, run.output
    again = recorded(handle, "vpm001")
    assert again == served(ports["vpm001"]) and not again & before
    run = playbook("unlock.yml", db, extra, inventory, names="vpm001" + DOMAIN)
    assert run.returncode == 0, run.output
    assert "vpm001" not in lab_domains()
    actions = [e["action"] for e in handle.history(["vpm001" + DOMAIN])]
    assert actions.count("lock") == 2 and actions.count("unlock") == 2 and "key" in actions


def test_inject_records_only_the_injected_keys_the_vm_serves(vm_lab, slots):
    """An image whose sshd serves fewer key types than were injected: what it serves is what is recorded."""
    _, ports, inventory = vm_lab
    handle, db, extra = slots
    run = playbook("lock.yml", db, extra, inventory, names="vpm004" + DOMAIN,
                   downburst_extra_meta_data={"lab": {"serve_key_types": ["ed25519"]}})
    assert run.returncode == 0, run.output
    keys = served(ports["vpm004"])
    assert [key.split()[0] for key in keys] == ["ssh-ed25519"]
    assert recorded(handle, "vpm004") == keys
    key_events = [e for e in handle.history(["vpm004" + DOMAIN]) if e["action"] == "key"]
    assert len(key_events) == 2  # the three injected keys before boot, then the one served


# lock.yml's closing message, per downburst_host_keys.
INSTALLED = {"inject": "{count} installed with fresh host keys, made by this run and injected before boot",
             "scan": "{count} installed; host keys scanned from each VM once it was up (downburst_host_keys=scan)"}


@pytest.mark.parametrize("host_keys", ["inject", "scan"])
def test_closing_message_counts_the_vms_installed(vm_lab, slots, tmp_path, host_keys):
    """Three VMs asked for, one create fails, a physical node locked with them: the message
    counts the VMs really installed and says how their host keys were obtained."""
    _, _, inventory = vm_lab
    handle, db, extra = slots
    handle.set_node("smithi001" + DOMAIN, {"machine_type": "smithi", "arch": "x86_64"}, actor="admin@lab")
    fail_vpm002 = "{{ {'lab': {'fail': 'create'}} if inventory_hostname is match('vpm002') else {} }}"
    targets_file = tmp_path / "targets.yml"
    run = run_playbook(REPO / "playbooks/lock.yml", "-i", inventory, "-e", f"@{extra}",
                       "-e", f"names=vpm001{DOMAIN},vpm002{DOMAIN},vpm003{DOMAIN},smithi001{DOMAIN}",
                       "-e", f"downburst_host_keys={host_keys}", "-e", f"targets_file={targets_file}",
                       "-e", json.dumps({"downburst_extra_meta_data": fail_vpm002}),
                       env={"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": OWNER})
    assert run.returncode != 0 and "failed at step 'Create the VM on its vpshost" in run.output, run.output
    assert run.result("Count the VMs installed")["msg"] == [
        INSTALLED[host_keys].format(count="2 VMs were"),
        f"no VM installed on vpm002{DOMAIN} (see the errors above)",
        f"their targets are above and in {targets_file}, and in the inventory (inventory/locks.yml) from now on",
    ]
    assert set(lab_domains()) & set(SLOTS) == {"vpm001", "vpm003"}
    targets = yaml.safe_load(targets_file.read_text())["targets"]
    assert set(targets) == {f"ubuntu@{name}{DOMAIN}" for name in ("vpm001", "vpm003", "smithi001")}


HELD_KEYS = ("{{ groups['teuthology_lab_provision'] | map('extract', hostvars)"
             " | map(attribute='downburst_new_host_keys', default='unset') | list }}")


def test_private_host_keys_are_forgotten_once_create_returns(vm_lab, slots, tmp_path):
    """lock.yml for two nodes, one whose create fails, then a play that looks at what the
    controller still holds of their host keys. (A play where every node failed would end the run.)"""
    _, _, inventory = vm_lab
    handle, db, extra = slots
    check = tmp_path / "lock_then_look.yml"
    check.write_text(yaml.safe_dump([
        {"ansible.builtin.import_playbook": str(REPO / "playbooks" / "lock.yml")},
        {"name": "Look", "hosts": "localhost", "gather_facts": False,
         "tasks": [{"name": "Host keys held", "ansible.builtin.debug": {"msg": HELD_KEYS}}]},
    ]))
    fail_vpm002 = "{{ {'lab': {'fail': 'create'}} if inventory_hostname is match('vpm002') else {} }}"
    run = run_playbook(check, "-i", inventory, "-e", f"@{extra}", "-e", f"names=vpm001{DOMAIN},vpm002{DOMAIN}",
                       "-e", json.dumps({"downburst_extra_meta_data": fail_vpm002}),
                       env={"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": OWNER})
    assert run.returncode != 0 and "failed at step 'Create the VM on its vpshost" in run.output, run.output
    assert [node["locked"] for node in handle.query(names=["vpm001" + DOMAIN, "vpm002" + DOMAIN])] == [True, False]
    assert run.result("Host keys held")["msg"] == [{}, {}]


def test_inject_refuses_a_vm_serving_other_keys(vm_lab, slots):
    _, _, inventory = vm_lab
    handle, db, extra = slots
    run = playbook("lock.yml", db, extra, inventory, names="vpm002" + DOMAIN,
                   downburst_extra_meta_data={"lab": {"ignore_ssh_keys": True}})
    assert run.returncode != 0
    assert "serves host keys that were not injected" in run.output and "downburst_host_keys=scan" in run.output
    assert "vpm002" not in lab_domains()
    node = handle.query(names=["vpm002" + DOMAIN])[0]
    assert (node["locked"], node["up"]) == (False, True)  # downburst_on_failure: unlock
    notes = [e["details"]["note"] for e in handle.history([node["name"]]) if e["action"] == "note"]
    assert len(notes) == 1 and "vpshost1" in notes[0] and "slot unlocked" in notes[0]


@pytest.mark.parametrize(
    ("failure", "on_failure", "step"),
    [("create", "down", "Create the VM on its vpshost"), ("ssh", "unlock", "Wait for the VM to answer SSH")],
)
def test_failed_provisioning_cleans_up(vm_lab, slots, failure, on_failure, step):
    _, _, inventory = vm_lab
    handle, db, extra = slots
    run = playbook("lock.yml", db, extra, inventory, names="vpm003" + DOMAIN, downburst_on_failure=on_failure,
                   downburst_ssh_timeout=8, downburst_extra_meta_data={"lab": {"fail": failure}})
    assert run.returncode != 0
    message = f"provisioning vpm003{DOMAIN} on vpshost vpshost2 failed at step '{step}"
    assert message in run.output, run.output
    if failure == "create":
        assert "ERROR:downburst" in run.output  # downburst's own stderr
    else:
        assert "served no SSH host key (waited 8 s)" in run.output
    assert "vpm003" not in lab_domains()
    node = handle.query(names=["vpm003" + DOMAIN])[0]
    assert node["locked"] is False
    assert node["up"] is (on_failure != "down")


def test_destroy_failure_keeps_the_slot_locked(vm_lab, slots):
    _, _, inventory = vm_lab
    handle, db, extra = slots
    run = playbook("lock.yml", db, extra, inventory, names="vpm004" + DOMAIN,
                   downburst_extra_meta_data={"lab": {"fail": "destroy"}})
    assert run.returncode == 0, run.output
    run = playbook("unlock.yml", db, extra, inventory, names="vpm004" + DOMAIN)
    assert run.returncode != 0
    assert f"still locked, their VMs could not be destroyed: vpm004{DOMAIN}" in run.output, run.output[-3000:]
    assert handle.query(names=["vpm004" + DOMAIN])[0]["locked"] is True
    assert "vpm004" in lab_domains()


def test_user_data_passes_cloud_init_schema(tmp_path):
    from ansible_collections.teuthology.lab.plugins.module_utils.downburst import user_data, user_data_text

    pairs = {}
    for key_type, bits in (("ed25519", "256"), ("ecdsa", "256"), ("rsa", "3072")):
        path = tmp_path / key_type
        subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-b", bits, "-N", "", "-f", path], check=True)
        pairs[key_type] = {"private": path.read_text(), "public": path.with_suffix(".pub").read_text()}
    config = tmp_path / "user-data"
    config.write_text(user_data_text(user_data("ubuntu", pairs)))
    check = subprocess.run(["cloud-init", "schema", "--config-file", config], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Valid cloud-config" in check.stdout
    bad = tmp_path / "bad"
    bad.write_text(user_data_text({"ssh_deletekeys": "yes please"}))
    assert subprocess.run(["cloud-init", "schema", "--config-file", bad], capture_output=True, check=False).returncode != 0


def test_leftover_vm_is_destroyed_and_create_retried(vm_lab, slots):
    lab, _, inventory = vm_lab
    handle, db, extra = slots
    vpshost = next(h for h in lab.vpshosts if h.name == SLOTS["vpm002"])
    leftover = vpshost.run(["downburst", "create", "--nokey", "vpm002"])
    assert leftover.returncode == 0, leftover.stderr
    run = playbook("lock.yml", db, extra, inventory, names="vpm002" + DOMAIN)
    assert run.returncode == 0, run.output
    created = run.result("Create the VM on its vpshost, waiting for downburst")
    assert created["creates"] == 2
    assert [next(verb for verb in ("create", "destroy") if verb in argv) for argv in created["commands"]] == ["create", "destroy", "create"]
    assert recorded(handle, "vpm002") == served(handle.query(names=["vpm002" + DOMAIN])[0]["ssh_port"])
    run = playbook("unlock.yml", db, extra, inventory, names="vpm002" + DOMAIN)
    assert run.returncode == 0 and "vpm002" not in lab_domains()
    # Destroying a VM that is already gone is not an error, and changes nothing.
    gone = vpshost.run(["downburst", "-v", "destroy", "vpm002"])
    assert gone.returncode == 0 and "No virtual machine found" in gone.stderr


def test_meta_data_is_what_downburst_reads():
    from ansible_collections.teuthology.lab.plugins.module_utils.downburst import meta_data, meta_data_text

    meta = meta_data(hostname="vpm001.front.sepia.ceph.com", os_type="ubuntu", os_version="22.04", arch="x86_64",
                     mac_address="52:54:00:00:00:01", network="front",
                     cpus=1, ram="3.8G", disk_size="100G", additional_disks=4, additional_disks_size="100G",
                     public_keys=["ssh-ed25519 AAAA alice"], extra={"downburst": {"hypervisor": "kvm"}})
    # downburst merges the file with yaml.safe_load + dict.update: check what that yields.
    merged = {"instance-id": "vpm001", "local-hostname": "vpm001", "public-keys": ["from ~/.ssh/id_rsa.pub"]}
    merged.update(yaml.safe_load(meta_data_text(meta)))
    assert merged["public-keys"] == ["ssh-ed25519 AAAA alice"]
    assert merged["local-hostname"] == "vpm001.front.sepia.ceph.com"  # ours replaces downburst's short name
    assert merged["downburst"] == {
        "distro": "ubuntu", "distroversion": "22.04", "arch": "x86_64", "cpus": 1, "ram": "3.8G", "disk-size": "100G",
        "additional-disks": 4, "additional-disks-size": "100G", "hypervisor": "kvm",
        "networks": [{"source": "front", "mac": "52:54:00:00:00:01"}],
    }
    assert isinstance(merged["downburst"]["cpus"], int)


def test_check_mode_shows_the_create_and_changes_nothing(vm_lab, slots, tmp_path):
    from support.seed import snapshot

    _, _, inventory = vm_lab
    handle, db, _ = slots
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    mine = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@desk"
    (home / ".ssh" / "id_ed25519.pub").write_text(mine + "\n")  # the default authorized key; no id_rsa.pub
    before = snapshot(handle)
    run = run_playbook(REPO / "playbooks/lock.yml", "-i", inventory, "--check", "-e", "count=1", "-e", "machine_type=vps",
                       "-e", "os_type=ubuntu", "-e", "os_version=22.04",
                       env={"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": OWNER, "HOME": str(home)})
    assert run.returncode == 0, run.output
    dry = run.result("Show what downburst would run (check mode; nothing is made, no key generated)")
    (argv,) = dry["commands"]
    assert argv[1:6] == ["-c", "qemu:///system", "create", "--wait", "--nokey"] and argv[-1] == "vpm001"
    assert dry["meta_data"]["public-keys"] == [mine]
    assert dry["meta_data"]["downburst"] == {"cpus": 1, "ram": "3.8G", "disk-size": "100G", "additional-disks": 4,
                                             "additional-disks-size": "100G", "distro": "ubuntu", "distroversion": "22.04",
                                             "arch": "x86_64"}
    assert snapshot(handle) == before
    assert not set(lab_domains()) & set(SLOTS)


@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check_mode"])
def test_negative_retries_is_refused_before_anything_runs(vm_lab, slots, check_mode):
    """The module on a vpshost, with a leftover VM there: retries -1 is bad input, named; no command runs."""
    lab, _, inventory = vm_lab
    vpshost = next(h for h in lab.vpshosts if h.name == SLOTS["vpm001"])
    leftover = vpshost.run(["downburst", "create", "--nokey", "vpm001"])
    assert leftover.returncode == 0, leftover.stderr
    node = {"name": "vpm001" + DOMAIN, "vpshost": vpshost.name, "os_type": "debian", "os_version": "12"}
    run = run_tasks([task("downburst", "Create with retries -1", ignore_errors=True, node=node, retries=-1)],
                    "-i", str(inventory), *(["--check"] if check_mode else []), hosts=vpshost.name, connection="ssh")
    created = run.result("Create with retries -1")
    assert created["failed"]
    assert created["msg"] == f"vpm001{DOMAIN}: retries: -1 is negative; give 0 (never destroy a leftover VM) or more", run.output
    assert "commands" not in created  # none ran, none planned
    assert "vpm001" in lab_domains()  # the leftover is still there


def test_leftover_vm_that_cannot_be_destroyed_is_reported_as_such(vm_lab, slots):
    """The create finds a leftover VM and the destroy that follows fails: the failure says so, with
    the destroy's exit code, downburst's error and command line, not as a failed create."""
    lab, _, inventory = vm_lab
    handle, db, extra = slots
    vpshost = next(h for h in lab.vpshosts if h.name == SLOTS["vpm002"])
    vpshost.write_file("/home/ubuntu/leftover.json", json.dumps({"lab": {"fail": "destroy"}}))  # sticks to the domain
    leftover = vpshost.run(["downburst", "create", "--nokey", "--meta-data=/home/ubuntu/leftover.json", "vpm002"])
    assert leftover.returncode == 0, leftover.stderr
    run = playbook("lock.yml", db, extra, inventory, names="vpm002" + DOMAIN)
    assert run.returncode != 0
    created = run.result("Create the VM on its vpshost, waiting for downburst")
    assert created["failed"]
    create, destroy = created["commands"]
    assert "create" in create and destroy[-2:] == ["destroy", "vpm002"]
    assert (created["rc"], created["command"]) == (1, shlex.join(destroy))
    message = (f"vpm002{DOMAIN}: downburst create found a leftover VM vpm002, and destroying it failed (exit 1): "
               f"ERROR:downburst.cli:downburst destroy: Injected failure (lab stand-in): destroy of vpm002 "
               f"(command: {shlex.join(destroy)})")
    assert created["msg"] == message
    assert "downburst create failed" not in run.output
    # The role's cleanup cannot destroy it either: the slot stays locked, down, with the failure in its history.
    node = handle.query(names=["vpm002" + DOMAIN])[0]
    assert (node["locked"], node["up"]) == (True, False)
    notes = [e["details"]["note"] for e in handle.history([node["name"]]) if e["action"] == "note"]
    assert len(notes) == 1 and message in notes[0], notes


def async_job_files(vpshost, job_ids: list[str]) -> list[str]:
    """The files of these async jobs in the vpshost user's (root's) ~/.ansible_async, once no
    process of theirs runs any more (Ansible's async wrapper writes a job's last result itself)."""
    prefixes = {job_id.split(".")[0] for job_id in job_ids}  # the job id given to the wrapper, before its pid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        running = [p for p in Path("/proc").glob("[0-9]*/cmdline") if prefixes & set(_read_args(p))]
        if not running:
            break
        time.sleep(0.5)
    async_dir = vpshost.path("/root/.ansible_async")
    return sorted(f.name for f in async_dir.glob("*") if f.name.split(".")[0] in prefixes) if async_dir.is_dir() else []


def _read_args(cmdline: Path) -> list[str]:
    try:
        return cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:  # the process ended meanwhile
        return []


PER_NODE = "{{{{ {} if inventory_hostname is match('vpm002') else {} if inventory_hostname is match('vpm003') else {} }}}}"


def files_holding(vpshost, text: str, besides: Path) -> list[str]:
    """Files in the vpshost's /tmp (shared with other test runs) and one level below, except
    those under ``besides``, that hold ``text``."""
    found = []
    for path in [*vpshost.path("/tmp").glob("*"), *vpshost.path("/tmp").glob("*/*")]:
        if path.name == besides.name or path.parent.name == besides.name:
            continue
        try:
            if path.is_file() and text in path.read_text(errors="replace"):
                found.append(str(path))
        except OSError:  # removed meanwhile, or not ours to read
            continue
    return found


def test_creates_leave_no_files_on_the_vpshosts(vm_lab, slots):
    """lock.yml for three nodes: one VM made, one create that fails, one that overruns its time
    (Ansible's async wrapper kills it). None leaves its job file in the vpshost's ~/.ansible_async,
    nor its meta-data or user-data (the private host keys) in a file, not even the killed one."""
    lab, _, inventory = vm_lab
    handle, db, extra = slots
    per_node = {
        "downburst_extra_meta_data": PER_NODE.format({"lab": {"fail": "boot"}}, {"lab": {"fail": "create"}}, {}),
        # vpm002 overruns its 6 s: Ansible's async wrapper kills the job and writes its last result itself.
        "downburst_create_timeout": PER_NODE.format(6, 1800, 1800),
        "downburst_poll_interval": 2,
    }
    run = run_playbook(REPO / "playbooks" / "lock.yml", "-i", inventory, "-e", f"@{extra}",
                       "-e", "names=" + ",".join(n + DOMAIN for n in ("vpm001", "vpm002", "vpm003")), "-e", json.dumps(per_node),
                       env={"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": OWNER})
    assert run.returncode != 0
    started = {e["host"]: e["result"]["ansible_job_id"] for e in run.results if e["task"] == "Create the VM on its vpshost"}
    assert sorted(started) == ["vpm001" + DOMAIN, "vpm002" + DOMAIN, "vpm003" + DOMAIN], run.output
    locked = {n["name"]: n["locked"] for n in handle.query(names=list(started))}
    assert locked == {"vpm001" + DOMAIN: True, "vpm002" + DOMAIN: False, "vpm003" + DOMAIN: False}
    polled = {e["host"]: e["result"] for e in run.results if e["task"] == "Create the VM on its vpshost, waiting for downburst"}
    assert polled["vpm002" + DOMAIN]["msg"] == "Timeout exceeded"
    client_key = lab.client_pubkey.read_text().split()[1]  # in the lab's run dir, and the meta-data of this run's creates
    for vpshost in lab.vpshosts:
        jobs = [job for host, job in started.items() if SLOTS[host.split(".")[0]] == vpshost.name]
        assert async_job_files(vpshost, jobs) == [], vpshost.name
        assert files_holding(vpshost, client_key, besides=lab.run_dir) == [], vpshost.name
