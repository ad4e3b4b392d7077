"""The teuthology.lab.locks inventory plugin through the real ansible-inventory."""

from __future__ import annotations

import json
import re
import subprocess

import yaml

from support.ansible_run import BIN, ansible_env
from support.seed import seed

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
OTHER_ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII6vqaXqcohCU8A5KQ4sAxHjPMoSN+SbodyYOtJFn5/l"
ALICE, BOB = "alice@laptop", "bob@desk"


def inventory(tmp_path, config: dict, *args: str, filename: str = "locks.yml", env: dict | None = None):
    """ansible-inventory -i FILE --list ARGS: (process, parsed JSON or None)."""
    source = tmp_path / filename
    source.write_text(yaml.safe_dump({"plugin": "teuthology.lab.locks", **config}))
    proc = subprocess.run(
        [BIN / "ansible-inventory", "-i", source, "--list", *args],
        env=ansible_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=300, check=False,
    )
    data = json.loads(proc.stdout, object_hook=unwrap_unsafe) if proc.returncode == 0 else None
    return proc, data


def unwrap_unsafe(value: dict):
    """ansible-inventory marks every string an inventory plugin set as unsafe (never templated)."""
    return value["__ansible_unsafe"] if set(value) == {"__ansible_unsafe"} else value


def hosts_of(data: dict, group: str) -> list[str]:
    return sorted(data.get(group, {}).get("hosts", []))


def write_bypassing_checks(lab, node: str, **values) -> None:
    """Change a node's row straight in the database, past the node module's validation."""
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import nodes

    with lab.engine.begin() as conn:
        assert conn.execute(nodes.update().where(nodes.c.name == node).values(**values)).rowcount == 1


def lab_fixture(lab):
    """alice holds 2 vps (one keyed) and a smithi for run-42; bob a vps; the rest free."""
    vps = seed(lab, "vps", 3, "vpm", vpshost="mira001.front.sepia.ceph.com", ssh_host="127.0.0.1", ssh_port=2222)
    vpx = seed(lab, "vps", 2, "vpx", vpshost="mira002.front.sepia.ceph.com")
    smithi = seed(lab, "smithi", 2, os_type="ubuntu")
    lab.set_node(vps[0], {"ssh_pub_key": ED25519}, actor="admin@lab")
    lab.lock(owner=ALICE, names=[vps[0], vps[1], smithi[0]], description="teuthology-run-42")
    lab.lock(owner=BOB, names=[vpx[0]], description="other")
    return vps, vpx, smithi


def test_hosts_groups_variables_and_filters(db_url, lab, tmp_path):
    vps, vpx, smithi = lab_fixture(lab)
    proc, data = inventory(tmp_path, {"db": db_url})
    assert proc.returncode == 0, proc.stderr
    assert hosts_of(data, "vps") == sorted([vps[0], vps[1], vpx[0]])
    assert hosts_of(data, "smithi") == [smithi[0]]
    assert hosts_of(data, "vpshost_mira001_front_sepia_ceph_com") == vps[:2]
    assert hosts_of(data, "vpshost_mira002_front_sepia_ceph_com") == [vpx[0]]
    hostvars = data["_meta"]["hostvars"]
    assert sorted(hostvars) == sorted([vps[0], vps[1], vpx[0], smithi[0]])

    keyed = hostvars[vps[0]]
    node = lab.query(names=[vps[0]])[0]
    assert {k: keyed[f"teuthology_{k}"] for k in node} == node
    assert (keyed["ansible_host"], keyed["ansible_port"], keyed["ansible_user"]) == ("127.0.0.1", 2222, "ubuntu")
    assert keyed["ansible_ssh_host_key_checking"] is True
    args = keyed["ansible_ssh_common_args"]
    assert f"-o StrictHostKeyChecking=yes -o HostKeyAlias={vps[0]} -o GlobalKnownHostsFile=/dev/null" in args
    assert "-o UserKnownHostsFile=/dev/null" in args and args.endswith(" -o VerifyHostKeyDNS=no")
    assert f"KnownHostsCommand=/usr/bin/printf '%%s %%s %%s\\n' {vps[0]} {ED25519}" in args
    assert re.fullmatch(r"%\(directory\)s/tlab-[0-9a-f]{10}-%%r@%%p", keyed["ansible_control_path"])

    plain = hostvars[smithi[0]]
    assert plain["ansible_host"] == smithi[0] and "ansible_port" not in plain
    assert "ansible_ssh_common_args" not in plain and "ansible_control_path" not in plain
    assert f"node {smithi[0]} has no recorded host key; listed unpinned" in proc.stderr

    _, mine = inventory(tmp_path, {"db": db_url, "owner": ALICE, "user": "root"})
    assert sorted(mine["_meta"]["hostvars"]) == sorted([vps[0], vps[1], smithi[0]])
    assert mine["_meta"]["hostvars"][vps[0]]["ansible_user"] == "root"
    _, typed = inventory(tmp_path, {"db": db_url, "machine_types": ["smithi"]})
    assert sorted(typed["_meta"]["hostvars"]) == [smithi[0]]
    _, described = inventory(tmp_path, {"db": db_url, "description": "run-42", "machine_types": ["vps"]})
    assert sorted(described["_meta"]["hostvars"]) == vps[:2]
    _, free = inventory(tmp_path, {"db": db_url, "locked": False, "host_key_mode": "none"})
    assert sorted(free["_meta"]["hostvars"]) == sorted([vps[2], vpx[1], smithi[1]])
    _, env_owner = inventory(tmp_path, {}, env={"TEUTHOLOGY_LAB_DB": db_url, "TEUTHOLOGY_LAB_OWNER": BOB})
    assert sorted(env_owner["_meta"]["hostvars"]) == [vpx[0]]


def test_known_hosts_file_mode_and_invalid_recorded_key(db_url, lab, tmp_path):
    vps, _, _ = lab_fixture(lab)
    # A key that bypassed validation (written by hand into the database) is never pinned.
    write_bypassing_checks(lab, vps[1], ssh_pub_key="ssh-ed25519 AAAA$(reboot)")
    known_hosts = tmp_path / "kh" / "known_hosts"
    proc, data = inventory(tmp_path, {"db": db_url, "host_key_mode": "known_hosts_file", "known_hosts_file": str(known_hosts)})
    assert proc.returncode == 0, proc.stderr
    assert known_hosts.read_text() == f"{vps[0]} {ED25519}\n"
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    pinned = data["_meta"]["hostvars"][vps[0]]
    assert f"-o UserKnownHostsFile={known_hosts} -o KnownHostsCommand=none" in pinned["ansible_ssh_common_args"]
    assert pinned["ansible_ssh_host_key_checking"] is True
    assert "ansible_ssh_common_args" not in data["_meta"]["hostvars"][vps[1]]
    assert f"node {vps[1]} is listed unpinned: its recorded host key is invalid" in proc.stderr

    proc, data = inventory(tmp_path, {"db": db_url})  # known_hosts_command mode: the same refusal
    assert "ansible_ssh_common_args" not in data["_meta"]["hostvars"][vps[1]]
    assert "$(reboot)" not in json.dumps({k: v for k, v in data["_meta"]["hostvars"][vps[1]].items() if k.startswith("ansible_")})


def test_default_known_hosts_file_is_per_source_and_query(db_url, lab, tmp_path):
    vps, vpx, _ = lab_fixture(lab)
    lab.set_node(vpx[0], {"ssh_pub_key": OTHER_ED25519}, actor="admin@lab")
    home = tmp_path / "home"
    env = {"HOME": str(home), "TEUTHOLOGY_LAB_DB": db_url}
    default_dir = home / ".cache" / "teuthology-lab"
    file_mode = {"host_key_mode": "known_hosts_file"}

    def known_hosts_files(data: dict) -> dict[str, str]:
        """host: the UserKnownHostsFile its ssh arguments name."""
        return {name: found.group(1) for name, hostvars in data["_meta"]["hostvars"].items()
                if (found := re.search(r"-o UserKnownHostsFile=(\S+) ", hostvars.get("ansible_ssh_common_args", "")))}

    # Two sources with other filters (alice's, bob's), in one run: a file each, each with its own keys.
    theirs = tmp_path / "b_locks.yml"
    theirs.write_text(yaml.safe_dump({"plugin": "teuthology.lab.locks", "owner": BOB, **file_mode}))
    proc, both = inventory(tmp_path, {"owner": ALICE, **file_mode}, "-i", str(theirs), filename="a_locks.yml", env=env)
    assert proc.returncode == 0, proc.stderr
    files = known_hosts_files(both)
    assert sorted(files) == [vps[0], vpx[0]] and files[vps[0]] != files[vpx[0]]
    for name, key in ((vps[0], ED25519), (vpx[0], OTHER_ED25519)):
        assert re.fullmatch(re.escape(f"{default_dir}/known_hosts-") + "[0-9a-f]{12}", files[name]), files[name]
        with open(files[name]) as known_hosts:
            assert known_hosts.read() == f"{name} {key}\n"

    # One after the other: the same file again, and bob's run leaves alice's file alone.
    for filename, owner in (("a_locks.yml", ALICE), ("b_locks.yml", BOB)):
        proc, alone = inventory(tmp_path, {"owner": owner, **file_mode}, filename=filename, env=env)
        assert proc.returncode == 0, proc.stderr
        assert known_hosts_files(alone).items() <= files.items()
    assert sorted(str(path) for path in default_dir.iterdir()) == sorted(files.values())
    with open(files[vps[0]]) as known_hosts:
        assert known_hosts.read() == f"{vps[0]} {ED25519}\n"

    # One source filtered through the environment: runs for two owners keep two files too.
    by_owner = {}
    for owner in (ALICE, BOB):
        proc, data = inventory(tmp_path, file_mode, filename="env_locks.yml", env={**env, "TEUTHOLOGY_LAB_OWNER": owner})
        assert proc.returncode == 0, proc.stderr
        (by_owner[owner],) = set(known_hosts_files(data).values())
    assert by_owner[ALICE] != by_owner[BOB] and not set(by_owner.values()) & set(files.values())


def test_bad_name_or_ssh_host_is_not_listed(db_url, lab, tmp_path):
    vps, vpx, smithi = lab_fixture(lab)
    # Rows written past the node module, which refuses these values: each would reach ssh's command line.
    write_bypassing_checks(lab, vps[0], ssh_host="-oProxyCommand=touch /tmp/x")
    write_bypassing_checks(lab, vps[1], ssh_host="127.0.0.1 -p 2")
    write_bypassing_checks(lab, smithi[0], name="-oProxyCommand=x")
    known_hosts = tmp_path / "known_hosts"
    for mode in ("known_hosts_command", "known_hosts_file"):
        proc, data = inventory(tmp_path, {"db": db_url, "host_key_mode": mode, "known_hosts_file": str(known_hosts)}, "--export")
        assert proc.returncode == 0, proc.stderr
        assert sorted(data["_meta"]["hostvars"]) == [vpx[0]]
        listed = {host for group in data.values() if isinstance(group, dict) for host in group.get("hosts", [])}
        assert listed == {vpx[0]}
        warnings = " ".join(proc.stderr.split())
        assert f"node '{vps[0]}' is not listed: its ssh_host '-oProxyCommand=touch /tmp/x' is not a host name or address" in warnings
        assert f"node '{vps[1]}' is not listed: its ssh_host '127.0.0.1 -p 2' is not a host name or address" in warnings
        assert "node '-oProxyCommand=x' is not listed: its name '-oProxyCommand=x' is not a host name or address" in warnings
    assert known_hosts.read_text() == ""  # vps[0], the only keyed node, is not listed


def test_locked_targets_group(db_url, lab, tmp_path):
    vps, vpx, smithi = lab_fixture(lab)
    # A mixed inventory: the vpshosts are hosts too, so "all" is not the locked nodes.
    vpshosts = tmp_path / "vpshosts.yml"
    vpshosts.write_text(yaml.safe_dump({"vpshosts": {"hosts": {"mira001.front.sepia.ceph.com": {}}}}))
    proc, data = inventory(tmp_path, {"db": db_url}, "-i", str(vpshosts))
    assert proc.returncode == 0, proc.stderr
    # Every locked node listed, pinned or not (smithi has no recorded key), and nothing else.
    assert hosts_of(data, "teuthology_lab_targets") == sorted([vps[0], vps[1], vpx[0], smithi[0]])
    assert "mira001.front.sepia.ceph.com" in hosts_of(data, "vpshosts")
    _, mine = inventory(tmp_path, {"db": db_url, "owner": ALICE})
    assert hosts_of(mine, "teuthology_lab_targets") == sorted([vps[0], vps[1], smithi[0]])

    source = tmp_path / "mine_locks.yml"
    source.write_text(yaml.safe_dump({"plugin": "teuthology.lab.locks", "db": db_url, "owner": ALICE}))
    graph = subprocess.run([BIN / "ansible-inventory", "-i", source, "-i", vpshosts, "--graph", "teuthology_lab_targets"],
                           env=ansible_env(), capture_output=True, text=True, timeout=300, check=False)
    assert graph.returncode == 0, graph.stderr
    assert graph.stdout.split() == ["@teuthology_lab_targets:", *(f"|--{name}" for name in sorted([vps[0], vps[1], smithi[0]]))]

    # Nobody's targets, none: the group is there, empty. The free pool is never in it.
    _, nobody = inventory(tmp_path, {"db": db_url, "owner": "nobody@nowhere"})
    assert "teuthology_lab_targets" in nobody["all"]["children"] and hosts_of(nobody, "teuthology_lab_targets") == []
    proc, free = inventory(tmp_path, {"db": db_url, "locked": False, "host_key_mode": "none"})
    assert proc.returncode == 0, proc.stderr
    assert sorted(free["_meta"]["hostvars"]) == sorted([vps[2], vpx[1], smithi[1]])
    assert "teuthology_lab_targets" not in free and "teuthology_lab_targets" not in free["all"]["children"]


def test_constructable_options(db_url, lab, tmp_path):
    vps, _, smithi = lab_fixture(lab)
    config = {
        "db": db_url,
        "owner": ALICE,
        "keyed_groups": [{"key": "teuthology_machine_type", "prefix": "type"}],
        "groups": {"keyed": "teuthology_ssh_pub_key is not none"},
        "compose": {"run": "teuthology_description.split('-')[-1]"},
    }
    proc, data = inventory(tmp_path, config)
    assert proc.returncode == 0, proc.stderr
    assert hosts_of(data, "type_vps") == vps[:2]
    assert hosts_of(data, "type_smithi") == [smithi[0]]
    assert hosts_of(data, "keyed") == [vps[0]]
    assert data["_meta"]["hostvars"][smithi[0]]["run"] == "42"


def test_cache_on_and_off(db_url, lab, tmp_path):
    vps, vpx, _ = lab_fixture(lab)
    cache_dir = tmp_path / "cache"
    cached = {"db": db_url, "machine_types": ["vps"], "cache": True, "cache_plugin": "ansible.builtin.jsonfile",
              "cache_connection": str(cache_dir), "cache_timeout": 3600}
    _, first = inventory(tmp_path, cached)
    assert sorted(first["_meta"]["hostvars"]) == sorted([vps[0], vps[1], vpx[0]])
    assert any(cache_dir.iterdir())
    lab.lock(owner=BOB, names=[vps[2]])
    _, stale = inventory(tmp_path, cached)
    assert sorted(stale["_meta"]["hostvars"]) == sorted(first["_meta"]["hostvars"])  # served from the cache
    _, fresh = inventory(tmp_path, cached, "--flush-cache")
    assert vps[2] in fresh["_meta"]["hostvars"]
    lab.unlock(owner=BOB, names=[vps[2]])
    _, uncached = inventory(tmp_path, {"db": db_url, "machine_types": ["vps"]})
    assert vps[2] not in uncached["_meta"]["hostvars"]


def test_export_carries_what_a_job_needs(db_url, lab, tmp_path):
    vps, _, _ = lab_fixture(lab)
    proc, data = inventory(tmp_path, {"db": db_url}, "--export")
    assert proc.returncode == 0, proc.stderr
    hostvars = data["_meta"]["hostvars"][vps[0]]
    for var in ("ansible_host", "ansible_port", "ansible_user", "ansible_ssh_common_args",
                "ansible_ssh_host_key_checking", "ansible_control_path", "teuthology_ssh_pub_key"):
        assert var in hostvars, var
    assert "KnownHostsCommand=" in hostvars["ansible_ssh_common_args"]


def test_host_shows_one_node(db_url, lab, tmp_path):
    vps, _, _ = lab_fixture(lab)
    source = tmp_path / "locks.yml"
    source.write_text(yaml.safe_dump({"plugin": "teuthology.lab.locks", "db": db_url}))
    proc = subprocess.run([BIN / "ansible-inventory", "-i", source, "--host", vps[0]], env=ansible_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    hostvars = json.loads(proc.stdout, object_hook=unwrap_unsafe)
    assert hostvars["teuthology_name"] == vps[0] and hostvars["teuthology_ssh_pub_key"] == ED25519
    assert hostvars["ansible_ssh_host_key_checking"] is True


def test_bad_configuration(tmp_path, pg_server):
    bad = [
        ({"db": "sqlite:///" + str(tmp_path / "lab.db"), "colour": "blue"}, "colour"),
        ({"db": "not a url"}, "db: 'not a url' is neither a database URL nor the absolute path of a file holding one"),
        ({"db": "postgresql+psycopg://lab:pw@127.0.0.1:1/lab"}, "db: cannot use database postgresql+psycopg://lab:***@127.0.0.1:1/lab"),
        ({"host_key_mode": "trust-me"}, "host_key_mode"),
    ]
    for config, expected in bad:
        proc, _ = inventory(tmp_path, config, "-vvv", env={"ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"})
        assert proc.returncode != 0, config
        assert expected in proc.stderr, (config, proc.stderr)
        assert ":pw@" not in proc.stderr


def test_verify_file_accepts_only_locks_files(db_url, lab, tmp_path):
    lab_fixture(lab)
    proc, data = inventory(tmp_path, {"db": db_url}, filename="lab.yml", env={"ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"})
    assert proc.returncode != 0
    proc, data = inventory(tmp_path, {"db": db_url}, filename="prod.locks.yaml")
    assert proc.returncode == 0 and data["_meta"]["hostvars"]
