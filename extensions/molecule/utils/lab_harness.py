"""The local test lab (tests/lab) as a background service for Molecule's create/destroy playbooks.

    lab_harness.py start STATE_DIR --slot vpm101 --slot vpm102   # vpshost(s) up, state written, returns
    lab_harness.py stop STATE_DIR                                 # vpshosts down, the slots' domains gone

`start` runs `serve` detached (its own session, output to STATE_DIR/harness.log) and
returns once the vpshosts answer SSH, printing the state it wrote to STATE_DIR/state.json:

    {"pid": ..., "inventory": {"vpshost1": {ansible vars}}, "slots": {"vpm101": PORT, ...},
     "vpshost": "vpshost1", "client_key": PATH, "client_pubkey": "ssh-ed25519 ..."}

`serve` owns a `lab.Lab()` (real sshd vpshosts on 127.0.1.N with the downburst stand-in on
PATH, libvirt/QEMU started when needed) until SIGTERM, its STATE_DIR disappearing, or
--max-lifetime seconds; then `Lab.stop()` stops the vpshosts and removes the Lab's domains.
`stop` sends SIGTERM, waits, and removes any domain still named like a slot (from this
scenario only: slot names are the scenario's own). Both print JSON with `changed`.

Needs the checkout's tests/ (the `lab` package) and the Python of the venv (libvirt-python).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TESTS = REPO / "tests"
STATE = "state.json"
PIDFILE = "harness.pid"
LOG = "harness.log"


def _lab():
    if not (TESTS / "lab" / "__init__.py").is_file():
        sys.exit(f"lab_harness: the local lab (tests/lab) is not in {REPO}; run from a checkout of the collection")
    sys.path.insert(0, str(TESTS))
    import lab

    return lab


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _our_serve(pid: int, state_dir: Path) -> bool:
    """Whether `pid` is the `serve` process of this state dir (not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in argv and str(state_dir).encode() in argv and any(a.endswith(b"lab_harness.py") for a in argv)


def serve(state_dir: Path, slots: list[str], vpshosts: int, max_lifetime: float) -> None:
    lab = _lab()
    stopping = False

    def request_stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    started = time.monotonic()
    with lab.Lab() as the_lab:
        hosts = the_lab.start_vpshosts(vpshosts)
        ports = {name: lab.free_port() for name in slots}
        the_lab.set_slots(ports)
        _write_json(state_dir / STATE, {
            "pid": os.getpid(),
            "run_dir": str(the_lab.run_dir),
            "inventory": the_lab.inventory(),
            "vpshost": hosts[0].name,
            "slots": ports,
            "client_key": str(the_lab.client_key),
            "client_pubkey": the_lab.client_pubkey.read_text().strip(),
        })
        print(f"lab up: {[h.name + '@' + h.address + ':' + str(h.port) for h in hosts]}, slots {ports}", flush=True)
        while not stopping:
            if not state_dir.is_dir():
                print("state dir gone: stopping", flush=True)
                break
            if time.monotonic() - started > max_lifetime:
                print(f"max lifetime {max_lifetime:.0f} s reached: stopping", flush=True)
                break
            if not all(h.alive() for h in hosts):
                print("a vpshost died: stopping", flush=True)
                break
            time.sleep(0.5)
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE).unlink()
    print("lab stopped", flush=True)


def start(state_dir: Path, slots: list[str], vpshosts: int, max_lifetime: float, timeout: float) -> dict:
    state_dir.mkdir(parents=True, exist_ok=True)
    state_file, pid_file = state_dir / STATE, state_dir / PIDFILE
    if state_file.exists() and pid_file.exists() and _our_serve(int(pid_file.read_text()), state_dir):
        return {"changed": False, **json.loads(state_file.read_text())}
    state_file.unlink(missing_ok=True)
    argv = [sys.executable, str(Path(__file__).resolve()), "serve", str(state_dir), "--vpshosts", str(vpshosts),
            "--max-lifetime", str(max_lifetime), *[a for s in slots for a in ("--slot", s)]]
    with open(state_dir / LOG, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd="/")
    pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while not state_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(60)
            tail = (state_dir / LOG).read_text(errors="replace")[-3000:]
            sys.exit(f"lab_harness: the lab did not come up (exit {proc.returncode}):\n{tail}")
        time.sleep(0.2)
    return {"changed": True, **json.loads(state_file.read_text())}


def _kill_vpshosts(state_dir: Path) -> None:
    """After a SIGKILL of serve: its sshd vpshosts (own sessions) and run dir, from the state it left."""
    try:
        run_dir = Path(json.loads((state_dir / STATE).read_text())["run_dir"])
    except (OSError, ValueError, KeyError):
        return
    for pid_file in run_dir.glob("vpshost*/sshd.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    shutil.rmtree(run_dir, ignore_errors=True)
    (state_dir / STATE).unlink(missing_ok=True)


def stop(state_dir: Path, slots: list[str], timeout: float) -> dict:
    pid_file = state_dir / PIDFILE
    stopped = False
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if _our_serve(pid, state_dir):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _our_serve(pid, state_dir) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _our_serve(pid, state_dir):
                os.kill(pid, signal.SIGKILL)
                _kill_vpshosts(state_dir)
            stopped = True
        pid_file.unlink()
    removed = []
    if slots and Path("/run/libvirt/libvirt-sock").exists():
        removed = _lab().cleanup_domains(names=slots)
    return {"changed": stopped or bool(removed), "stopped": stopped, "removed_domains": removed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("action", choices=["start", "stop", "serve"])
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--slot", action="append", default=[], help="a VM slot name (short name of the node)")
    parser.add_argument("--vpshosts", type=int, default=1)
    parser.add_argument("--max-lifetime", type=float, default=3600, help="seconds after which serve stops by itself")
    parser.add_argument("--timeout", type=float, help="seconds start waits for the lab (600) / stop for serve (120)")
    args = parser.parse_args()
    if args.timeout is None:
        args.timeout = 600 if args.action == "start" else 120
    state_dir = args.state_dir.resolve()
    if args.action == "serve":
        serve(state_dir, args.slot, args.vpshosts, args.max_lifetime)
        return
    if args.action == "start":
        result = start(state_dir, args.slot, args.vpshosts, args.max_lifetime, args.timeout)
    else:
        result = stop(state_dir, args.slot, args.timeout)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
