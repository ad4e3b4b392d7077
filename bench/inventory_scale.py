"""The inventory plugin at scale: a lock database of 10,000 nodes, 2,000 of
them locked, every node with host keys. Times, in the same run (median of
--runs runs each):

- ``ansible-inventory -i locks.yml --list``: the teuthology.lab.locks plugin;
- the same hosts, groups and variables as a static JSON inventory;
- the floor: a bare plugin (bench/inventory_plugins/bench_floor.py) adding the
  same hosts, groups and variables from a list it already holds.

    .venv/bin/python bench/inventory_scale.py [--nodes 10000] [--locked 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))

from support.ansible_run import BIN, ansible_env, collections_root

sys.path.insert(0, str(collections_root()))

from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab, nodes


def host_key(kind: bytes, size: int) -> str:
    blob = struct.pack(">I", len(kind)) + kind + struct.pack(">I", size) + os.urandom(size)
    return f"{kind.decode()} {base64.b64encode(blob).decode()}"


def seed(db_url: str, total: int, locked: int) -> None:
    lab = Lab(db_url)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = []
    for i in range(total):
        vps = i % 2 == 0
        rows.append({
            "name": f"{'vpm' if vps else 'smithi'}{i:05d}.front.sepia.ceph.com",
            "machine_type": "vps" if vps else "smithi",
            "arch": "x86_64", "os_type": "ubuntu", "os_version": "22.04", "up": True,
            "locked": i < locked, "locked_by": f"user{i % 50}@lab" if i < locked else None,
            "locked_since": now if i < locked else None, "description": f"run-{i % 200}" if i < locked else None,
            "vpshost": f"mira{i % 100:03d}.front.sepia.ceph.com" if vps else None,
            "ssh_pub_key": "\n".join(sorted([host_key(b"ssh-ed25519", 32), host_key(b"ecdsa-sha2-nistp256", 64)])),
            "mac_address": None, "ssh_host": None, "ssh_port": None, "lease_expires": None,
        })
    with lab.engine.begin() as conn:
        conn.execute(nodes.insert(), rows)
    lab.close()


def timed(source: Path, env: dict[str, str]) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([BIN / "ansible-inventory", "-i", source, "--list"], env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"ansible-inventory -i {source} failed:\n{proc.stderr}")
    return elapsed, json.loads(proc.stdout, object_hook=lambda d: d["__ansible_unsafe"] if set(d) == {"__ansible_unsafe"} else d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--locked", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tlab-invbench-"))
    db_url = f"sqlite:///{tmp / 'lab.db'}"
    seed(db_url, args.nodes, args.locked)
    env = ansible_env(TEUTHOLOGY_LAB_DB=db_url, ANSIBLE_INVENTORY_PLUGINS=str(BENCH / "inventory_plugins"),
                      ANSIBLE_INVENTORY_ENABLED="teuthology.lab.locks,bench_floor,ansible.builtin.yaml",
                      ANSIBLE_INVENTORY_UNPARSED_FAILED="1")
    locks = tmp / "locks.yml"
    locks.write_text("plugin: teuthology.lab.locks\n")
    _, listed = timed(locks, env)
    hostvars = listed["_meta"]["hostvars"]
    assert len(hostvars) == args.locked, len(hostvars)
    membership: dict[str, list[str]] = {name: [] for name in hostvars}
    static_groups = {}
    for group, body in listed.items():
        if group in ("_meta", "all", "ungrouped"):
            continue
        static_groups[group] = {"hosts": {name: None for name in body.get("hosts", [])}}
        for name in body.get("hosts", []):
            membership[name].append(group)
    # The static inventory: the same hosts, groups and variables, in Ansible's YAML/JSON format.
    static = tmp / "static.json"
    static.write_text(json.dumps({"all": {"hosts": hostvars, "children": static_groups}}))
    floor_data = tmp / "floor.json"
    floor_data.write_text(json.dumps([{"name": n, "groups": membership[n], "vars": v} for n, v in hostvars.items()]))
    floor = tmp / "floor.yml"
    floor.write_text(f"plugin: bench_floor\ndata: {floor_data}\n")

    sources = {"teuthology.lab.locks": locks, "static JSON": static, "floor (bare plugin)": floor}
    times: dict[str, list[float]] = {label: [] for label in sources}
    for _ in range(args.runs):
        # Interleaved, so that a slow spell of the machine falls on every source alike.
        for label, source in sources.items():
            elapsed, data = timed(source, env)
            assert sorted(data["_meta"]["hostvars"]) == sorted(hostvars), label
            times[label].append(elapsed)
    results = {label: statistics.median(values) for label, values in times.items()}
    floor_time = results["floor (bare plugin)"]
    print(f"{args.nodes} nodes, {args.locked} locked with keys; ansible-inventory --list, median of {args.runs}")
    print(f"{'source':<22} {'seconds':>8} {'x floor':>8}")
    for label, seconds in results.items():
        print(f"{label:<22} {seconds:>8.2f} {seconds / floor_time:>8.2f}")


if __name__ == "__main__":
    main()
