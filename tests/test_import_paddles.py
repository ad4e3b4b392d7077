"""teuthology.lab.import_paddles (playbooks/import_paddles.yml) from a live
paddles API: the lab's own lock server, seeded through that API with
paddles-shaped nodes (every field, a VM with its host, up null, locked
nodes), listing them as paddles does (up null: support.misbehaving's
paddles_null_up). Check mode first, then twice for real; locks are kept,
never undone."""

from __future__ import annotations

import pytest

from support.ansible_run import REPO, run_playbook
from support.lockserver import serve
from support.seed import snapshot

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
SCHEDULED = "scheduled_teuthworker@teuthology"
ARCHIVE = "/home/teuthworker/archive/teuthology-2026-11-30_12:00:00-rados-main-distro-default-smithi/7"
HOST = "mira001.front.sepia.ceph.com"
VM = "vpm001.front.sepia.ceph.com"
LOCKED, NEVER_UP, FREE = (f"smithi00{i}.front.sepia.ceph.com" for i in (1, 2, 3))
COMPARED = ("machine_type", "arch", "os_type", "os_version", "up", "locked", "locked_by", "locked_since", "description",
            "vpshost", "ssh_pub_key", "mac_address")


@pytest.fixture
def paddles(tmp_path):
    """A paddles API with the nodes a lab moving off paddles has."""
    for served in serve(f"sqlite:///{tmp_path / 'paddles.db'}", 'support.misbehaving:create_app("paddles_null_up")'):
        bodies = [
            {"name": HOST, "machine_type": "mira", "arch": "x86_64", "os_type": "ubuntu", "os_version": "22.04", "up": True,
             "mac_address": "52:54:00:00:00:10", "ssh_pub_key": ED25519, "locked": False},
            {"name": VM, "machine_type": "vps", "arch": "x86_64", "up": True, "is_vm": True, "vm_host": HOST,
             "mac_address": "52:54:00:00:00:11"},
            {"name": LOCKED, "machine_type": "smithi", "arch": "x86_64", "os_type": "centos", "os_version": "9", "up": True},
            {"name": NEVER_UP, "machine_type": "smithi", "arch": "x86_64"},  # no "up": null in paddles
            {"name": FREE, "machine_type": "smithi", "arch": "aarch64", "up": True},
        ]
        with served.client() as client:
            for body in bodies:
                assert client.request("POST", "/nodes/", body) == (200, {})
            assert client.lock_many(SCHEDULED, 1, "smithi", ARCHIVE, os_type="centos")[0] == 200
            status, listed = client.request("GET", "/nodes/")
        assert status == 200
        assert {node["name"]: node["up"] for node in listed}[NEVER_UP] is None
        yield served


def import_paddles(paddles, db_url, *args):
    return run_playbook(REPO / "playbooks" / "import_paddles.yml", "-e", f"url={paddles.url}", *args,
                        env={"TEUTHOLOGY_LAB_DB": db_url, "TEUTHOLOGY_LAB_OWNER": "admin@lab"})


def test_import(paddles, db_url, lab):
    before = snapshot(lab)
    run = import_paddles(paddles, db_url, "--check", "--diff")
    assert run.returncode == 0, run.output
    checked = run.result("Import the nodes")
    assert checked["changed"] is True
    assert sorted(checked["created"]) == sorted([HOST, VM, LOCKED, NEVER_UP, FREE])
    assert checked["diff"]["after"][VM]["vpshost"] == HOST
    assert snapshot(lab) == before, "check mode changed the lab"

    run = import_paddles(paddles, db_url)
    assert run.returncode == 0, run.output
    assert sorted(run.result("Import the nodes")["created"]) == sorted([HOST, VM, LOCKED, NEVER_UP, FREE])
    source = {node["name"]: node for node in paddles.lab.query()}
    imported = {node["name"]: node for node in lab.query()}
    for name, node in source.items():
        assert {f: imported[name][f] for f in COMPARED} == {f: node[f] for f in COMPARED}, name
    assert imported[VM]["vpshost"] == HOST
    assert imported[NEVER_UP]["up"] is False  # null: out of the pool
    assert (imported[LOCKED]["locked_by"], imported[LOCKED]["description"]) == (SCHEDULED, ARCHIVE)
    assert imported[LOCKED]["locked_since"] == source[LOCKED]["locked_since"]

    after_first = snapshot(lab)
    run = import_paddles(paddles, db_url)
    assert run.returncode == 0, run.output
    again = run.result("Import the nodes")
    assert (again["changed"], again["created"], again["updated"], again["unchanged"]) == (False, [], [], 5)
    assert snapshot(lab) == after_first


def test_locks_are_never_undone_or_taken_over(paddles, db_url, lab):
    run = import_paddles(paddles, db_url)
    assert run.returncode == 0, run.output
    # paddles frees LOCKED and changes FREE's arch; the lab locks FREE for another run.
    paddles.lab.unlock(owner=SCHEDULED, names=[LOCKED])
    paddles.lab.set_node(FREE, {"arch": "x86_64"}, actor="admin@lab")
    lab.lock(owner="bob@desk", names=[FREE], description="bob's run")
    run = import_paddles(paddles, db_url, "--diff")
    assert run.returncode == 0, run.output
    result = run.result("Import the nodes")
    assert result["updated"] == [FREE]
    assert sorted(result["lock_conflicts"], key=lambda c: c["name"]) == [
        {"name": LOCKED, "lab": f"{SCHEDULED} {ARCHIVE}", "paddles": "free"},
        {"name": FREE, "lab": "bob@desk bob's run", "paddles": "free"},
    ]
    nodes = {node["name"]: node for node in lab.query()}
    assert (nodes[LOCKED]["locked"], nodes[LOCKED]["locked_by"]) == (True, SCHEDULED)
    assert (nodes[FREE]["locked_by"], nodes[FREE]["arch"]) == ("bob@desk", "x86_64")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("url", "message"), [
    ("file:///etc/passwd", "is not a paddles URL"),
    ("http://127.0.0.1:9/?x=1", "is not a paddles URL"),
    ("http://user:s3cret@127.0.0.1:9/", "answered -1"),
])
def test_a_bad_url_is_refused_naming_it(db_url, lab, url, message):
    before = snapshot(lab)
    run = run_playbook(REPO / "playbooks" / "import_paddles.yml", "-e", f"url={url}", env={"TEUTHOLOGY_LAB_DB": db_url})
    assert run.returncode != 0
    failure = run.result("Import the nodes")
    assert failure["failed"] and failure["msg"].startswith("url: ") and message in failure["msg"], failure["msg"]
    assert "s3cret" not in run.output
    assert snapshot(lab) == before
