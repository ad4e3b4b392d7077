"""AWX integration: the execution environment definition, the credential type, the job
templates and workflow, and the playbooks and inventory source run the way AWX runs them
(ansible-runner, credential injected as environment, survey answers as extra vars)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jinja2
import pytest
import yaml

from support.ansible_run import BIN, REPO, collections_root
from support.pgserver import PASSWORD
from support.seed import seed

AWX = REPO / "awx"
LOCKDB = REPO / "plugins" / "module_utils" / "lockdb.py"
SURVEY_TYPES = {"text", "integer", "multiplechoice"}


def load(name: str):
    return yaml.safe_load((AWX / name).read_text())


def requirement_lines(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def dev_pin(package: str) -> str:
    for line in requirement_lines(REPO / "requirements-dev.txt"):
        if line.split("==")[0] == package:
            return line
    raise AssertionError(f"{package} is not pinned in requirements-dev.txt")


# --- the execution environment -------------------------------------------------------


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    """ansible-builder create: the build context of awx/execution-environment.yml (no network, no engine)."""
    ctx = tmp_path_factory.mktemp("ee") / "context"
    dead = "http://127.0.0.1:9"  # anything that tried to fetch would fail
    env = {**os.environ, "http_proxy": dead, "https_proxy": dead, "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "no_proxy": ""}
    proc = subprocess.run(
        [str(BIN / "ansible-builder"), "create", "-f", str(AWX / "execution-environment.yml"), "-c", str(ctx),
         "--output-filename", "Containerfile"],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ctx


def test_builder_context_has_our_requirements(context):
    containerfile = (context / "Containerfile").read_text()
    build = context / "_build"
    assert "COPY _build/requirements.txt" in containerfile
    assert "COPY _build/bindep.txt" in containerfile
    python = requirement_lines(build / "requirements.txt")
    for line in requirement_lines(REPO / "requirements.txt"):
        assert line in python
    system = requirement_lines(build / "bindep.txt")
    assert system == requirement_lines(REPO / "meta" / "ee-bindep.txt")
    assert "openssh-clients [platform:rpm]" in system
    assert "openssh-client [platform:dpkg]" in system
    # The EE runs the ansible-core and ansible-runner the collection is tested with.
    assert dev_pin("ansible-core") in containerfile
    assert dev_pin("ansible-runner") in containerfile
    galaxy = yaml.safe_load((build / "requirements.yml").read_text())
    assert any("teuthology.lab" in entry["name"] for entry in galaxy["collections"])


def test_collection_declares_its_ee_needs(context):
    """The builder's own introspection (run inside the image) finds the collection's meta/execution-environment.yml."""
    meta = yaml.safe_load((REPO / "meta" / "execution-environment.yml").read_text())
    assert meta["version"] == 1
    for path in meta["dependencies"].values():
        assert (REPO / path).is_file(), path
    proc = subprocess.run(
        [sys.executable, str(context / "_build" / "scripts" / "introspect.py"), "introspect", str(collections_root())],
        capture_output=True, text=True, timeout=60, check=True,
    )
    found = yaml.safe_load(proc.stdout)
    python = [line.split("#")[0].strip() for line in found["python"]]
    system = [line.split("#")[0].strip() for line in found["system"]]
    assert "sqlalchemy>=2.0,<2.2" in python
    assert "psycopg[binary]>=3.1,<3.4" in python
    assert "openssh-clients [platform:rpm]" in system


def test_bindep_file_parses():
    from bindep.depends import Depends

    rules = Depends((REPO / "meta" / "ee-bindep.txt").read_text())._rules
    assert {name for name, _, _ in rules} == {"openssh-clients", "openssh-client"}


# --- the credential type ---------------------------------------------------------------


def inject_credential(inputs: dict[str, str], private_data_dir: Path) -> dict[str, str]:
    """What AWX does with awx/credential_type.yml for a job: each `file` injector rendered into a
    private file under the job's private data directory, then the `env` injectors rendered
    with `tower.filename.NAME` naming those files. Returns the injected environment."""
    injectors = load("credential_type.yml")["injectors"]
    (private_data_dir / "env").mkdir(parents=True, exist_ok=True)
    filenames = {}
    for key, template in injectors.get("file", {}).items():
        fd, path = tempfile.mkstemp(dir=private_data_dir / "env")
        with os.fdopen(fd, "w") as f:  # mkstemp's file is 0600
            f.write(jinja2.Template(template).render(**inputs))
        filenames[key.removeprefix("template.")] = path
    return {name: jinja2.Template(value).render(**inputs, tower={"filename": filenames})
            for name, value in injectors["env"].items()}


def constant(name: str) -> str:
    found = re.search(rf'^{name} = "([^"]+)"$', LOCKDB.read_text(), re.MULTILINE)
    assert found, f"{name} not in {LOCKDB}"
    return found.group(1)


def test_credential_type(tmp_path):
    from ansible_collections.teuthology.lab.plugins.inventory import locks

    ct = load("credential_type.yml")
    assert set(ct) == {"name", "description", "kind", "inputs", "injectors"}
    assert ct["kind"] == "cloud"
    fields = {field["id"]: field for field in ct["inputs"]["fields"]}
    assert set(fields) == {"db_url", "owner"}
    assert fields["db_url"]["secret"] is True
    assert not fields["owner"].get("secret", False)
    assert all(field["type"] == "string" and field["label"] for field in fields.values())
    assert ct["inputs"]["required"] == ["db_url"]
    assert set(ct["injectors"]) == {"file", "env"}
    assert not [name for name in ct["injectors"]["env"] if name.startswith("ANSIBLE_")]  # AWX refuses those
    env = inject_credential({"db_url": "URL", "owner": "OWNER"}, tmp_path)
    assert set(env) == {constant("DB_ENV"), constant("OWNER_ENV")} and env[constant("OWNER_ENV")] == "OWNER"
    # The URL is in a private file, and the environment only names it.
    url_file = Path(env[constant("DB_ENV")])
    assert url_file.parent == tmp_path / "env" and url_file.read_text() == "URL"
    assert url_file.stat().st_mode & 0o077 == 0
    # The inventory plugin reads the same variables.
    options = yaml.safe_load(locks.DOCUMENTATION)["options"]
    assert [entry["name"] for entry in options["db"]["env"]] == [constant("DB_ENV")]
    assert [entry["name"] for entry in options["owner"]["env"]] == [constant("OWNER_ENV")]


# --- job templates, inventory source, workflow -------------------------------------------


def test_job_templates():
    data = load("job_templates.yml")
    inventories = {inv["name"] for inv in data["inventories"]}
    sources = {src["name"]: src for src in data["inventory_sources"]}
    templates = {jt["name"]: jt for jt in data["job_templates"]}
    assert {"Lock nodes", "Unlock nodes", "List targets"} <= set(templates)
    assert templates["Lock nodes"]["playbook"] == "playbooks/lock.yml"
    assert templates["Unlock nodes"]["playbook"] == "playbooks/unlock.yml"
    assert templates["List targets"]["playbook"] == "playbooks/list_targets.yml"

    for src in sources.values():
        assert src["source"] == "scm"
        assert src["source_path"] == "inventory/locks.yml"
        assert (REPO / src["source_path"]).is_file()
        assert src["inventory"] in inventories
        assert src["credential"] == "Teuthology lab"

    for jt in templates.values():
        playbook = (REPO / jt["playbook"]).read_text()
        assert jt["inventory"] in inventories
        if not jt.get("survey_enabled"):
            continue
        spec = jt["survey_spec"]["spec"]
        names = [question["variable"] for question in spec]
        assert len(names) == len(set(names))
        for question in spec:
            assert {"question_name", "variable", "type", "required"} <= set(question)
            assert question["type"] in SURVEY_TYPES
            assert re.search(rf"\b{question['variable']}\b", playbook), f"{jt['playbook']} does not read {question['variable']}"
            if question["type"] == "multiplechoice":
                assert question["choices"] and all(isinstance(choice, str) for choice in question["choices"])
                if "default" in question:
                    assert question["default"] in question["choices"]
            if question["type"] == "integer" and "default" in question:
                assert isinstance(question["default"], int)
            if not question["required"]:
                assert not question.get("default"), "an optional question with a default is always sent"
    lock_vars = {q["variable"] for q in templates["Lock nodes"]["survey_spec"]["spec"]}
    assert lock_vars == {"machine_type", "count", "os_type", "os_version", "description", "lease"}
    unlock_vars = {q["variable"] for q in templates["Unlock nodes"]["survey_spec"]["spec"]}
    assert unlock_vars == {"names", "all", "force"}
    assert "Teuthology lab" in templates["Lock nodes"]["credentials"]
    assert "Teuthology lab" in templates["Unlock nodes"]["credentials"]


def test_workflow():
    data = load("job_templates.yml")
    templates = {jt["name"] for jt in data["job_templates"]}
    sources = {src["name"] for src in data["inventory_sources"]}
    (workflow,) = data["workflow_job_templates"]
    nodes = {node["identifier"]: node for node in workflow["workflow_nodes"]}
    assert len(nodes) == len(workflow["workflow_nodes"])
    for node in nodes.values():
        ujt = node["unified_job_template"]
        assert ujt["name"] in (sources if ujt["type"] == "inventory_source" else templates)
        for edge in ("success_nodes", "failure_nodes", "always_nodes"):
            for child in node["related"][edge]:
                assert child["identifier"] in nodes

    def children(node: str, edge: str) -> list[str]:
        return [child["identifier"] for child in nodes[node]["related"][edge]]

    assert nodes["lock"]["unified_job_template"]["name"] == "Lock nodes"
    assert nodes["sync"]["unified_job_template"] == {**nodes["sync"]["unified_job_template"], "type": "inventory_source"}
    assert children("lock", "success_nodes") == ["sync"]
    assert children("sync", "success_nodes") == ["test"]
    assert children("test", "always_nodes") == ["unlock"]
    assert "unlock" in children("lock", "failure_nodes")
    assert "unlock" in children("sync", "failure_nodes")
    assert nodes["unlock"]["unified_job_template"]["name"] == "Unlock nodes"
    assert nodes["unlock"]["extra_data"] == {"all": "true"}
    assert (REPO / next(jt for jt in data["job_templates"] if jt["name"] == "Test on the locked targets")["playbook"]).is_file()


def test_readme_explains_the_sync():
    text = (AWX / "README.md").read_text()
    for phrase in ("ansible-inventory", "--export", "refresh_inventory", "caching", "workflow"):
        assert phrase in text


# --- the playbooks and the inventory source through ansible-runner -------------------------

OWNER = "awx@lab"


class Awx:
    """Runs jobs the way AWX does: one private data directory per job, the credential as env/envvars."""

    def __init__(self, root: Path, db_url: str) -> None:
        self.root = root
        self.db_url = db_url
        self.stored_inventory: dict = {"_meta": {"hostvars": {}}}
        self.dirs: list[Path] = []

    def private_data_dir(self, ident: str, credential: bool, extravars: dict | None = None) -> Path:
        pdd = self.root / ident
        (pdd / "env").mkdir(parents=True)
        envvars = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "ANSIBLE_COLLECTIONS_PATH": str(collections_root()),
                   "ANSIBLE_NOCOLOR": "1"}
        if credential:
            envvars |= inject_credential({"db_url": self.db_url, "owner": OWNER}, pdd)
        (pdd / "env" / "envvars").write_text(yaml.safe_dump(envvars))
        if extravars is not None:
            (pdd / "env" / "extravars").write_text(yaml.safe_dump(extravars))
        # The job's inventory: AWX's stored copy of the last sync, as a script printing it.
        (pdd / "inventory").mkdir()
        script = pdd / "inventory" / "hosts"
        script.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(self.stored_inventory))})\n")
        script.chmod(0o700)
        self.dirs.append(pdd)
        return pdd

    def job(self, ident: str, playbook: str, extravars: dict, credential: bool = True):
        import ansible_runner

        pdd = self.private_data_dir(ident, credential, extravars)
        return ansible_runner.run(private_data_dir=str(pdd), project_dir=str(REPO), playbook=playbook, ident=ident,
                                  quiet=True, suppress_env_files=True, timeout=120)

    def sync(self, ident: str, source: str = "inventory/locks.yml") -> None:
        """An inventory update: ansible-inventory --list --export in the project, credential injected; the result is stored."""
        import ansible_runner

        pdd = self.private_data_dir(ident, credential=True)
        out, err, rc = ansible_runner.run_command(
            executable_cmd="ansible-inventory", cmdline_args=["-i", str(REPO / source), "--list", "--export"],
            private_data_dir=str(pdd), project_dir=str(REPO), host_cwd=str(REPO), ident=ident,
            runner_mode="subprocess", quiet=True, suppress_env_files=True, timeout=120,
        )
        assert rc == 0, out + err
        self.stored_inventory = json.loads(out)


def task_results(run, task: str) -> list[dict]:
    return [e["event_data"]["res"] for e in run.events if e.get("event") == "runner_on_ok" and e["event_data"].get("task") == task]


@pytest.fixture
def clean_environ(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("ANSIBLE_", "TEUTHOLOGY_LAB_")):
            monkeypatch.delenv(name)


def test_lock_sync_test_unlock_through_ansible_runner(pg_server, tmp_path, clean_environ):
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    db_url = pg_server.create_database()
    assert PASSWORD in db_url
    lab = Lab(db_url)
    try:
        names = seed(lab, "smithi", 4)
        awx = Awx(tmp_path, db_url)

        # Lock: the survey's answers, as AWX sends text answers (strings).
        lock = awx.job("lock", "playbooks/lock.yml",
                       {"machine_type": "smithi", "count": "2", "description": "awx-run-1", "lease": "4h"})
        assert lock.status == "successful", lock.stdout.read()
        (locked,) = task_results(lock, "Lock the nodes")
        assert len(locked["locked"]) == 2 and set(locked["locked"]) <= set(names)
        stdout = (tmp_path / "lock" / "artifacts" / "lock" / "stdout").read_text()
        for name in locked["locked"]:
            assert f"ubuntu@{name}" in stdout
        held = {node["name"] for node in lab.query() if node["locked"]}
        assert held == set(locked["locked"])
        assert {node["locked_by"] for node in lab.query() if node["locked"]} == {OWNER}

        # Inventory sync, then a job on the stored inventory, without the database credential.
        awx.sync("sync")
        assert set(awx.stored_inventory["_meta"]["hostvars"]) == held
        check = awx.job("check", "awx/check_targets.yml", {}, credential=False)
        assert check.status == "successful", check.stdout.read()
        shown = [res["msg"] for res in task_results(check, "Show the target")]
        assert len(shown) == 2
        for name in held:
            assert any(msg.startswith(f"target {name} (smithi)") and f"locked by {OWNER}" in msg for msg in shown), shown

        # List targets, as its job template runs it (no survey).
        listed = awx.job("list", "playbooks/list_targets.yml", {})
        assert listed.status == "successful", listed.stdout.read()
        (targets,) = task_results(listed, "Show the targets")
        assert set(yaml.safe_load(targets["msg"])["targets"]) == {f"ubuntu@{name}" for name in held}

        # Unlock, as the workflow's unlock node sends it.
        unlock = awx.job("unlock", "playbooks/unlock.yml", {"all": "true", "force": "false"})
        assert unlock.status == "successful", unlock.stdout.read()
        assert not [node for node in lab.query() if node["locked"]]
        awx.sync("sync-after")
        assert awx.stored_inventory["_meta"]["hostvars"] == {}
    finally:
        lab.close()

    # The password is in no artifact, not even ansible-runner's record of each job's environment.
    artifacts = [path for pdd in awx.dirs for path in (pdd / "artifacts").rglob("*") if path.is_file()]
    assert any(path.name == "command" for path in artifacts) and any(path.name == "stdout" for path in artifacts)
    leaks = [path for path in artifacts if PASSWORD in path.read_text(errors="replace")]
    assert not leaks, leaks
