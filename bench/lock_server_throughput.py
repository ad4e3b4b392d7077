"""Lock cycles per second through the lock server (paddles' API, gunicorn as
``make lock-server`` starts it), beside the one-row SQL floor measured on the
same database in the same run, at 1, 4 and 16 client processes, on
PostgreSQL and SQLite.

    .venv/bin/python bench/lock_server_throughput.py [--seconds 10] [--only postgresql] [--workers N]

A cycle is teuthology's: POST /nodes/lock_many/ of K=1..3 nodes of a 50-node
pool, GET /nodes/NAME/ of each granted node, POST /nodes/unlock_many/
(tests/support/lockload.py's HttpClient, each client process on one
HTTP/1.1 connection, reopened when gunicorn closes it). The floor is
bench/lock_throughput.py's: one-row lock and unlock transactions on a raw
driver connection. Every run counts the load's correctness violations
(double allocations, grants the read-back does not confirm, refusals, leaked
locks): they must all be zero.

paddles measured on this machine under 4-16 such clients: 25-30 cycles/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lock_throughput import CONCURRENCY, floor_rate, prepare

from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab
from support.lockload import HttpClient, run_load
from support.lockserver import LockServer
from support.pgserver import PostgresServer

PADDLES_CYCLES = 30  # the best paddles did here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement (default 10)")
    parser.add_argument("--only", choices=["postgresql", "sqlite"], help="measure one database only")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: make lock-server's, one per CPU)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    server = PostgresServer().start()
    tmp = tempfile.mkdtemp(prefix="tlab-bench-")
    violations = 0
    try:
        databases = {"postgresql": server.create_database("bench"), "sqlite": f"sqlite:///{tmp}/lab.db"}
        print(f"{'database':<11} {'clients':>7} {'cycles/s':>9} {'floor/s':>8} {'x floor':>8} {'x paddles':>9} {'violations':>10}")
        for kind, url in databases.items():
            if args.only and kind != args.only:
                continue
            prepare(url)
            with LockServer(url, workers=args.workers) as lock_server:
                for clients in CONCURRENCY:
                    load = run_load(lock_server.url, clients, args.seconds, ["bench"], client=HttpClient)
                    floor = floor_rate(url, kind, clients, args.seconds)
                    found = {what: items for what, items in load.violations().items() if items}
                    lab = Lab(url)
                    leaked = lab.query(locked=True)
                    lab.close()
                    if leaked:
                        found["leaked locks"] = [node["name"] for node in leaked]
                    count = sum(len(items) for items in found.values())
                    violations += count
                    print(f"{kind:<11} {clients:>7} {load.rate:>9.0f} {floor:>8.0f} {floor / load.rate:>8.2f} "
                          f"{load.rate / PADDLES_CYCLES:>9.1f} {count:>10}", flush=True)
                    for what, items in found.items():
                        for item in items[:3]:
                            print(f"    {what}: {item}")
    finally:
        server.stop()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
