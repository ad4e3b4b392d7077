"""Wall time to lock and provision 1 and 4 vps nodes on 2 vpshosts until they
answer SSH with their keys recorded (playbooks/lock.yml on the local lab),
and the ratio 4-node / 1-node. Teuthology creates VMs one after the other
(ratio about 4); 4 nodes locked one after the other (4 runs of lock.yml with
count=1) are measured too, as that serial baseline in the same run. The floor is what software emulation on this
machine's cores costs by itself: the downburst stand-in run directly over SSH,
1 VM, then 4 at once, until they answer SSH, with no Ansible at all.
Then Ansible's own time (run minus floor), and where the time of the last
1- and 4-node runs went, task by task.

    .venv/bin/python bench/provision_parallel.py [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lab import Lab as VMLab
from lab import cleanup_domains, free_port
from support.ansible_run import REPO, collections_root, run_playbook

sys.path.insert(0, str(collections_root()))

from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

SLOTS = {"vpm201": "vpshost1", "vpm202": "vpshost2", "vpm203": "vpshost1", "vpm204": "vpshost2"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs of each measurement (median)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tlab-provbench-"))
    with VMLab() as lab:
        lab.start_vpshosts(2)
        ports = {name: free_port() for name in SLOTS}
        lab.set_slots(ports)
        inventory = tmp / "vpshosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {"hosts": lab.inventory()}}))
        extra = tmp / "extra.json"
        extra.write_text(json.dumps({"downburst_authorized_keys": [lab.client_pubkey.read_text().strip()]}))
        db = f"sqlite:///{tmp / 'lab.db'}"
        handle = Lab(db)
        for short, vpshost in SLOTS.items():
            handle.set_node(f"{short}.front.sepia.ceph.com", {"machine_type": "vps", "vpshost": vpshost,
                                                              "ssh_host": "127.0.0.1", "ssh_port": ports[short]}, actor="bench@lab")
        # The checkout's ansible.cfg, as a user running the playbooks from it gets (pipelining).
        env = {"TEUTHOLOGY_LAB_DB": db, "TEUTHOLOGY_LAB_OWNER": "bench@lab", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}

        task_times: dict[int, list[tuple[str, float]]] = {}

        def provision(count: int, one_by_one: bool = False) -> float:
            start = time.perf_counter()
            for batch in [1] * count if one_by_one else [count]:
                run = run_playbook(REPO / "playbooks/lock.yml", "-i", str(inventory), "-e", f"@{extra}",
                                   "-e", f"count={batch}", "-e", "machine_type=vps", env=env)
                if run.returncode != 0:
                    raise SystemExit(run.output)
            if not one_by_one:
                task_times[count] = wall_time_by_task(run.results)
            elapsed = time.perf_counter() - start
            keyed = [n for n in handle.query(locked=True) if n["ssh_pub_key"]]
            assert len(keyed) == count, keyed
            unlocked = run_playbook(REPO / "playbooks/unlock.yml", "-i", str(inventory), "-e", "all=true", env=env)
            if unlocked.returncode != 0:
                raise SystemExit(unlocked.output)
            return elapsed

        def emulation_floor(count: int) -> float:
            """Boot `count` VMs at once with the stand-in alone (create --wait), then destroy them."""
            names = list(SLOTS)[:count]
            hosts = {h.name: h for h in lab.vpshosts}
            for host in hosts.values():
                host.write_file("/home/bench/meta.yaml", json.dumps({"public-keys": [lab.client_pubkey.read_text().strip()]}))
            start = time.perf_counter()
            with ThreadPoolExecutor(count) as pool:
                runs = list(pool.map(lambda name: hosts[SLOTS[name]].run(
                    ["downburst", "create", "--wait", "--nokey", "--meta-data=/home/bench/meta.yaml", name]), names))
            elapsed = time.perf_counter() - start
            for name, run in zip(names, runs, strict=True):
                if run.returncode != 0:
                    raise SystemExit(run.stderr)
                hosts[SLOTS[name]].run(["downburst", "destroy", name], check=True)
            return elapsed

        try:
            floor = {count: statistics.median(emulation_floor(count) for _ in range(args.runs)) for count in (1, 4)}
            results = {
                "1 node": statistics.median(provision(1) for _ in range(args.runs)),
                "4 nodes": statistics.median(provision(4) for _ in range(args.runs)),
                "4 nodes one after the other": statistics.median(provision(4, one_by_one=True) for _ in range(args.runs)),
            }
        finally:
            cleanup_domains(names=list(SLOTS))
            handle.close()
    one = results["1 node"]
    print(f"lock + provision until SSH-ready with recorded keys (2 vpshosts), median of {args.runs}")
    print(f"{'':<36} {'seconds':>8} {'x 1 node':>9}")
    for label, seconds in results.items():
        print(f"{label:<36} {seconds:>8.1f} {seconds / one:>9.2f}")
    print(f"{'floor: stand-in alone, 1 VM':<36} {floor[1]:>8.1f} {1:>9.2f}")
    print(f"{'floor: stand-in alone, 4 VMs at once':<36} {floor[4]:>8.1f} {floor[4] / floor[1]:>9.2f}")
    print(f"Ansible's own time over the floor: 1 node {one - floor[1]:.1f} s, 4 nodes {results['4 nodes'] - floor[4]:.1f} s"
          " (including waiting for the next async_status poll, every downburst_poll_interval seconds)")
    print("\nwhere the time went, task by task (seconds from the task's start to its last host's result)")
    print(f"{'':<72} {'1 node':>7} {'4 nodes':>8}")
    one_node = dict(task_times[1])
    for task, seconds in task_times[4]:
        print(f"{task[:72]:<72} {one_node.get(task, 0):>7.1f} {seconds:>8.1f}")


def wall_time_by_task(results: list[dict]) -> list[tuple[str, float]]:
    """Each task's wall time, in the order the tasks ran: from its first start to its last result."""
    spans: dict[str, float] = {}
    for task in dict.fromkeys(entry["task"] for entry in results):
        entries = [entry for entry in results if entry["task"] == task]
        spans[task] = max(entry["finished"] for entry in entries) - min(entry["started"] for entry in entries)
    return list(spans.items())


if __name__ == "__main__":
    main()
