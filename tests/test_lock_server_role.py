"""The role teuthology.lab.lock_server, applied by ansible-playbook to this
machine with its paths under a temporary directory: the virtualenv (pip, from
PyPI), the collection's plugins, the root-only URL file, the unit.

systemd is not PID 1 in this sandbox (a container's init is), so no unit can
be started here: the unit is checked with ``systemd-analyze verify``, and the
test starts the unit's exact ExecStart command line itself, with the
environment the unit gives it (``%d``, the credentials directory, holding the
URL file as ``LoadCredential`` would copy it), as root rather than the unit's
User=. The role's health check then runs against it, and fails once it is
stopped.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from support.ansible_run import run_playbook
from support.lockserver import PaddlesClient
from support.pgserver import PASSWORD, free_port
from support.seed import seed

UNIT = "teuthology-lab-lock-server.service"


def apply_role(tmp_path: Path, role_vars: dict[str, object], tasks_from: str = "main"):
    play = [{
        "name": "lock server",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [{"name": "Apply the role", "vars": role_vars,
                   "ansible.builtin.include_role": {"name": "teuthology.lab.lock_server", "tasks_from": tasks_from}}],
    }]
    playbook = tmp_path / f"play-{tasks_from}.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    return run_playbook(playbook, "-i", "localhost,", timeout=900)


def unit_settings(unit: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_role_deploys_a_server_that_answers(pg_server, tmp_path):
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    db_url = pg_server.create_database()
    seeded = Lab(db_url)
    seed(seeded, "smithi", 2)
    seeded.close()
    (tmp_path / "units").mkdir()  # /etc/systemd/system, on a real host
    port = free_port()
    role_vars = {
        "lock_server_bind": f"127.0.0.1:{port}",
        "lock_server_workers": 2,
        "lock_server_db_url": db_url,
        "lock_server_user": "nobody",
        "lock_server_venv": str(tmp_path / "opt" / "venv"),
        "lock_server_collections_path": str(tmp_path / "opt" / "collections"),  # not beside the playbook: Ansible would search it
        "lock_server_config_dir": str(tmp_path / "etc"),
        "lock_server_unit_dir": str(tmp_path / "units"),
        "lock_server_service": False,
    }
    run = apply_role(tmp_path, role_vars)
    assert run.returncode == 0, run.output
    assert PASSWORD not in run.output

    url_file = tmp_path / "etc" / "lock-server.db-url"
    status = url_file.stat()
    assert (status.st_mode & 0o777, status.st_uid) == (0o600, 0)
    assert url_file.read_text() == db_url + "\n"
    unit = tmp_path / "units" / UNIT
    assert PASSWORD not in unit.read_text()
    settings = unit_settings(unit)
    assert settings["LoadCredential"] == [f"db-url:{url_file}"]
    assert settings["Environment"] == ["TEUTHOLOGY_LAB_DB=%d/db-url"]
    assert settings["User"] == ["nobody"]

    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # What systemd would do: copy the credential, set the environment, run ExecStart.
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    shutil.copy(url_file, credentials / "db-url")
    (execstart,) = settings["ExecStart"]
    environment = dict(line.replace("%d", str(credentials)).split("=", 1) for line in settings["Environment"])
    server = subprocess.Popen(shlex.split(execstart), env={"PATH": "/usr/bin:/bin", **environment}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        health = apply_role(tmp_path, role_vars, tasks_from="health")
        assert health.returncode == 0, health.output
        with PaddlesClient(f"http://127.0.0.1:{port}/") as client:
            status_code, nodes = client.lock_many("alice@laptop", 2, "smithi", "through the unit")
            assert status_code == 200 and len(nodes) == 2, nodes
        for pid in [server.pid, *_children(server.pid)]:
            assert PASSWORD not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert sorted(node["name"] for node in lab_nodes(db_url)) == sorted(node["name"] for node in nodes)
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0].decode(errors="replace")
    assert server.returncode == 0, output
    assert PASSWORD not in output

    stopped = apply_role(tmp_path, {**role_vars, "lock_server_health_timeout": 2}, tasks_from="health")
    assert stopped.returncode != 0
    assert stopped.result("Ask the lock server for its machine types")["failed"]


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    return [int(child) for child in found]


def lab_nodes(db_url: str) -> list[dict]:
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    lab = Lab(db_url)
    try:
        return lab.query(locked=True)
    finally:
        lab.close()
