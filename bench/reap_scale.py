"""Wall time of the reaper (playbooks/reap.yml) over 2 vpshosts of the local lab
with 10, 50 and 100 VM slots each, 2 of them per vpshost with a running VM,
and how many domain listings it took: one per vpshost, however many slots.
Each size is measured twice: when there is nothing to do (the steady state of
a reaper run from cron), and with one orphan VM per vpshost to destroy.

    .venv/bin/python bench/reap_scale.py [--sizes 10,50,100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lab import Lab as VMLab
from lab import cleanup_domains, free_port
from support.ansible_run import REPO, collections_root, run_playbook

sys.path.insert(0, str(collections_root()))

from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

VPSHOSTS = ("vpshost1", "vpshost2")
WITH_VMS = 2  # slots per vpshost with a running VM
DOMAIN = ".front.sepia.ceph.com"


def slot_names(size: int) -> dict[str, str]:
    """Short name -> vpshost; names of one length, so that none starts with another."""
    return {f"vpr{host + 1}{i:03d}": vpshost for host, vpshost in enumerate(VPSHOSTS) for i in range(size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,100", help="slots per vpshost, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (median)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="tlab-reapbench-"))
    with VMLab() as lab:
        lab.start_vpshosts(len(VPSHOSTS))
        slots = slot_names(max(sizes))
        ports = {name: free_port() for name in slots}
        lab.set_slots(ports)
        inventory = tmp / "vpshosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {"hosts": lab.inventory()}}))
        extra = tmp / "extra.json"
        extra.write_text(json.dumps({"downburst_authorized_keys": [lab.client_pubkey.read_text().strip()]}))
        env = {"TEUTHOLOGY_LAB_OWNER": "bench@lab", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
        print(f"{'slots/vpshost':>13} {'state':>10} {'seconds':>8} {'listings':>9} {'destroyed':>10}")
        for size in sizes:
            db = f"sqlite:///{tmp / f'lab-{size}.db'}"
            handle = Lab(db)
            names = {short: vpshost for short, vpshost in slots.items() if int(short[4:]) < size}
            for short, vpshost in names.items():
                handle.set_node(short + DOMAIN, {"machine_type": "vps", "vpshost": vpshost, "ssh_host": "127.0.0.1",
                                                 "ssh_port": ports[short]}, actor="bench@lab")
            with_vms = [short for short in names if int(short[4:]) < WITH_VMS]
            run = run_playbook(REPO / "playbooks/lock.yml", "-i", inventory, "-e", f"@{extra}",
                               "-e", "names=" + ",".join(short + DOMAIN for short in with_vms), env={**env, "TEUTHOLOGY_LAB_DB": db})
            if run.returncode != 0:
                raise SystemExit(run.output[-3000:])
            for state in ("steady", "orphans"):
                seconds, listings, destroyed = [], 0, 0
                for _ in range(args.runs):
                    if state == "orphans":  # the unlock module alone: the VM stays, on a free slot, for the reaper
                        orphans = [short for short in with_vms if int(short[4:]) == 0]
                        handle.unlock(owner="bench@lab", names=[short + DOMAIN for short in orphans], force=True)
                    started = time.perf_counter()
                    run = run_playbook(REPO / "playbooks/reap.yml", "-i", inventory, env={**env, "TEUTHOLOGY_LAB_DB": db})
                    seconds.append(time.perf_counter() - started)
                    if run.returncode != 0:
                        raise SystemExit(run.output[-3000:])
                    listings = sum(1 for entry in run.results if entry["task"] == "List the domains")
                    report = run.result("Say what was done, by vpshost")["lab_reaped.report"]
                    destroyed = sum(len(entry.get("destroy", [])) for entry in report.values())
                    if state == "orphans":  # back to two VMs per vpshost for the next run
                        relock = run_playbook(REPO / "playbooks/lock.yml", "-i", inventory, "-e", f"@{extra}",
                                              "-e", "names=" + ",".join(short + DOMAIN for short in orphans),
                                              env={**env, "TEUTHOLOGY_LAB_DB": db})
                        if relock.returncode != 0:
                            raise SystemExit(relock.output[-3000:])
                print(f"{size:>13} {state:>10} {statistics.median(seconds):>8.1f} {listings:>9} {destroyed:>10}", flush=True)
            handle.close()
            cleanup_domains(names=list(slots))


if __name__ == "__main__":
    main()
