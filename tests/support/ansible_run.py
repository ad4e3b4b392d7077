"""Run real ansible-playbook against the collection and collect task results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def collections_root() -> Path:
    """A collections path holding this checkout as ansible_collections/teuthology/lab."""
    root = Path(os.environ.get("TLAB_COLLECTIONS") or tempfile.mkdtemp(prefix="tlab-collections-"))
    link = root / "ansible_collections" / "teuthology" / "lab"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO)
    os.environ["TLAB_COLLECTIONS"] = str(root)
    return root


def ansible_env(**extra: str) -> dict[str, str]:
    """The environment of an ansible run: this collection, our callback, no user config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "TEUTHOLOGY_LAB_"))}
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_COLLECTIONS_PATH=str(collections_root()),
        ANSIBLE_CALLBACK_PLUGINS=str(SUPPORT / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="record_results",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        ANSIBLE_CONFIG=str(SUPPORT / "ansible.cfg"),
    )
    env.update(extra)
    return env


@dataclass
class Run:
    returncode: int
    output: str
    results: list[dict[str, Any]] = field(default_factory=list)

    def result(self, task: str) -> dict[str, Any]:
        """The result of the (last) task of that name."""
        found = [entry for entry in self.results if entry["task"] == task]
        assert found, f"no result for task {task!r}; tasks: {[e['task'] for e in self.results]}\n{self.output}"
        return {**found[-1]["result"], "failed": found[-1]["status"] == "failed"}


def run_playbook(playbook: str | Path, *args: str, env: dict[str, str] | None = None, timeout: int = 600) -> Run:
    """ansible-playbook PLAYBOOK ARGS..., with results recorded."""
    with tempfile.NamedTemporaryFile(prefix="tlab-results-", suffix=".jsonl", delete=False) as out:
        results_file = out.name
    try:
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), str(playbook), *args],
            env=ansible_env(TLAB_RESULTS=results_file, **(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO, check=False,
        )
        with open(results_file) as f:
            results = [json.loads(line) for line in f if line.strip()]
    finally:
        os.unlink(results_file)
    return Run(proc.returncode, proc.stdout + proc.stderr, results)


def task(module: str, title: str | None = None, /, ignore_errors: bool = False, **args: Any) -> dict[str, Any]:
    """A task calling teuthology.lab.MODULE with ARGS, named TITLE."""
    entry: dict[str, Any] = {"name": title or module, f"teuthology.lab.{module}": args}
    if ignore_errors:
        entry["ignore_errors"] = True
    return entry


def run_tasks(tasks: list[dict[str, Any]], *args: str, env: dict[str, str] | None = None, **play: Any) -> Run:
    """One play on localhost with these tasks, run with the controller's Python."""
    playbook = [
        {
            "name": "test",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": tasks,
            **play,
        }
    ]
    with tempfile.NamedTemporaryFile("w", prefix="tlab-play-", suffix=".yml", delete=False) as f:
        yaml.safe_dump(playbook, f, sort_keys=False)
        path = f.name
    try:
        return run_playbook(path, "-i", "localhost,", *args, env=env)
    finally:
        os.unlink(path)
