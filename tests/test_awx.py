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
from support.printed import printed_targets
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


class CredentialRefused(ValueError):
    """AWX refuses a credential that lacks a required input."""


def inject_credential(inputs: dict[str, str], private_data_dir: Path) -> dict[str, str]:
    """What AWX does with awx/credential_type.yml for a job: a credential whose required inputs
    are not all set is refused (AWX's CredentialInputField: `if not value.get(field)`, so an empty
    string is missing too, "required for <type name>"); then each `file` injector is rendered into
    a private file under the job's private data directory, and the `env` injectors with
    `tower.filename.NAME` naming those files. Returns the injected environment."""
    credential_type = load("credential_type.yml")
    missing = [field for field in credential_type["inputs"].get("required", []) if not inputs.get(field)]
    if missing:
        raise CredentialRefused(f"{', '.join(missing)}: required for {credential_type['name']}")
    injectors = credential_type["injectors"]
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
    assert ct["inputs"]["required"] == ["db_url", "owner"]
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
    test_template = next(jt for jt in data["job_templates"] if jt["name"] == "Test on the locked targets")
    assert (REPO / test_template["playbook"]).is_file()
    # The vpshosts are in the same AWX inventory: the test job is limited to the locked targets.
    assert test_template["limit"] == "teuthology_lab_targets"
    assert re.search(r"^  hosts: teuthology_lab_targets$", (REPO / test_template["playbook"]).read_text(), re.MULTILINE)


def test_readme_explains_the_sync():
    text = (AWX / "README.md").read_text()
    for phrase in ("ansible-inventory", "--export", "refresh_inventory", "caching", "workflow"):
        assert phrase in text


# --- the playbooks and the inventory source through ansible-runner -------------------------

OWNER = "awx@lab"
OTHER_OWNER = "bob@desk"
# A host of the AWX inventory that no inventory source manages: the vpshosts are added to it by hand
# (the lock job template runs downburst on them), so the job's `all` holds more than the targets.
VPSHOST = {"mira001.front.sepia.ceph.com": {"ansible_host": "127.0.1.250", "ansible_user": "ubuntu"}}


def job_template(name: str) -> dict:
    return next(jt for jt in load("job_templates.yml")["job_templates"] if jt["name"] == name)


class Awx:
    """Runs jobs the way AWX does: one private data directory per job, the credential as env/envvars."""

    def __init__(self, root: Path, db_url: str, static_hosts: dict | None = None) -> None:
        self.root = root
        self.db_url = db_url
        self.static_hosts = static_hosts or {}
        self.stored_inventory: dict = {"_meta": {"hostvars": {}}}
        self.dirs: list[Path] = []

    def job_inventory(self) -> dict:
        """What a job gets: the hosts of the last sync, and the hosts added to the inventory by hand (ungrouped)."""
        inventory = json.loads(json.dumps(self.stored_inventory))
        inventory["_meta"]["hostvars"] |= self.static_hosts
        if self.static_hosts:
            inventory.setdefault("ungrouped", {}).setdefault("hosts", []).extend(self.static_hosts)
            inventory.setdefault("all", {}).setdefault("children", [])
            if "ungrouped" not in inventory["all"]["children"]:
                inventory["all"]["children"].append("ungrouped")
        return inventory

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
        # The job's inventory: AWX's stored copy, as a script printing it.
        (pdd / "inventory").mkdir()
        script = pdd / "inventory" / "hosts"
        script.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(self.job_inventory()))})\n")
        script.chmod(0o700)
        self.dirs.append(pdd)
        return pdd

    def launch(self, ident: str, template: str, extravars: dict):
        """A job of that job template (awx/job_templates.yml): its playbook, limit and credential."""
        import ansible_runner

        jt = job_template(template)
        pdd = self.private_data_dir(ident, "Teuthology lab" in jt["credentials"], extravars)
        return ansible_runner.run(private_data_dir=str(pdd), project_dir=str(REPO), playbook=jt["playbook"], ident=ident,
                                  limit=jt.get("limit"), quiet=True, suppress_env_files=True, timeout=120)

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
        names = seed(lab, "smithi", 5)
        lab.lock(owner=OTHER_OWNER, names=[names[-1]], description="bob's run")
        awx = Awx(tmp_path, db_url, static_hosts=VPSHOST)

        # Lock: the survey's answers, as AWX sends text answers (strings).
        lock = awx.launch("lock", "Lock nodes", {"machine_type": "smithi", "count": "2", "description": "awx-run-1", "lease": "4h"})
        assert lock.status == "successful", lock.stdout.read()
        (locked,) = task_results(lock, "Lock the nodes")
        assert len(locked["locked"]) == 2 and set(locked["locked"]) <= set(names[:-1])
        # The job output (the project's ansible.cfg applies): the targets block copies as YAML.
        stdout = (tmp_path / "lock" / "artifacts" / "lock" / "stdout").read_text()
        assert yaml.safe_load(printed_targets(stdout)) == {"targets": dict.fromkeys(f"ubuntu@{name}" for name in locked["locked"])}
        held = {node["name"] for node in lab.query(owner=OWNER)}
        assert held == set(locked["locked"])

        # Inventory sync: the credential's owner filters, so bob's node is not a target.
        awx.sync("sync")
        assert set(awx.stored_inventory["_meta"]["hostvars"]) == held
        # The test job, on the stored inventory, without the database credential: the targets, not the vpshost.
        check = awx.launch("check", "Test on the locked targets", {})
        assert check.status == "successful", check.stdout.read()
        shown = [res["msg"] for res in task_results(check, "Show the target")]
        assert len(shown) == 2, shown
        for name in held:
            assert any(msg.startswith(f"target {name} (smithi)") and f"locked by {OWNER}" in msg for msg in shown), shown

        # List targets, as its job template runs it (no survey): every owner's, as no owner is given.
        listed = awx.launch("list", "List targets", {})
        assert listed.status == "successful", listed.stdout.read()
        (targets,) = task_results(listed, "Show the targets")
        assert set(targets["msg"]["targets"]) == {f"ubuntu@{name}" for name in held | {names[-1]}}

        # Unlock, as the workflow's unlock node sends it: the owner's nodes, not bob's.
        unlock = awx.launch("unlock", "Unlock nodes", {"all": "true", "force": "false"})
        assert unlock.status == "successful", unlock.stdout.read()
        assert [node["name"] for node in lab.query(locked=True)] == [names[-1]]
        awx.sync("sync-after")
        assert awx.stored_inventory["_meta"]["hostvars"] == {}
    finally:
        lab.close()

    # The password is in no artifact, not even ansible-runner's record of each job's environment.
    artifacts = [path for pdd in awx.dirs for path in (pdd / "artifacts").rglob("*") if path.is_file()]
    assert any(path.name == "command" for path in artifacts) and any(path.name == "stdout" for path in artifacts)
    leaks = [path for path in artifacts if PASSWORD in path.read_text(errors="replace")]
    assert not leaks, leaks


@pytest.mark.parametrize("owner", ["", None])
def test_credential_without_owner_is_refused(tmp_path, owner):
    """Without an owner the inventory would list every locked node of the lab, and unlock free nothing."""
    with pytest.raises(CredentialRefused, match=r"^owner: required for Teuthology lab lock database$"):
        inject_credential({"db_url": "sqlite:////nonexistent/lab.db", "owner": owner}, tmp_path)
    assert not (tmp_path / "env").exists() or not list((tmp_path / "env").iterdir())


# --- blank survey answers ---------------------------------------------------------------------


def optional_survey_questions() -> list[tuple[str, str]]:
    """(job template, variable) of every optional question of every survey in awx/job_templates.yml."""
    return [(jt["name"], question["variable"]) for jt in load("job_templates.yml")["job_templates"] if jt.get("survey_enabled")
            for question in jt["survey_spec"]["spec"] if not question["required"]]


def launch_answers(template: str) -> dict:
    """What a launch sends without the optional answers: each required question's default, and
    what the workflow's node of that template adds (the unlock node: all)."""
    answers = {q["variable"]: q["default"] for q in job_template(template)["survey_spec"]["spec"] if q["required"]}
    for workflow in load("job_templates.yml")["workflow_job_templates"]:
        for node in workflow["workflow_nodes"]:
            if node["unified_job_template"]["name"] == template:
                answers |= node.get("extra_data", {})
    return answers


PER_LOCK_FIELDS = ("locked_since", "lease_expires", "lock_token", "vm_since")


def outcome(root: Path, template: str, answers: dict) -> list[dict]:
    """Launch the template on a fresh lab (3 free smithi nodes, 2 held by the credential's owner,
    1 by another); return every node afterwards, the values each lock makes anew (times, lock
    token) reduced to set or not."""
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    root.mkdir()
    db_url = f"sqlite:///{root / 'lab.db'}"
    lab = Lab(db_url)
    try:
        names = seed(lab, "smithi", 6)
        lab.lock(owner=OWNER, names=names[3:5], description="held")
        lab.lock(owner=OTHER_OWNER, names=names[5:], description="bob's")
        run = Awx(root, db_url).launch("job", template, answers)
        assert run.status == "successful", f"{template} with {answers}:\n{run.stdout.read()}"
        return [{**node, **{field: node[field] is not None for field in PER_LOCK_FIELDS}} for node in lab.query()]
    finally:
        lab.close()


@pytest.mark.parametrize(("template", "variable"), optional_survey_questions())
def test_blank_survey_answer_means_unset(tmp_path, clean_environ, template, variable):
    """An optional survey field left blank arrives as "" (AWX 17+) or null (AWX 24): as if not sent."""
    answers = launch_answers(template)
    assert variable not in answers
    unset = outcome(tmp_path / "unset", template, answers)
    for label, blank in (("empty", ""), ("null", None)):
        assert outcome(tmp_path / label, template, {**answers, variable: blank}) == unset, label


def test_every_optional_survey_question_is_covered():
    covered = set(optional_survey_questions())
    assert {("Lock nodes", "os_type"), ("Lock nodes", "lease"), ("Unlock nodes", "names")} <= covered
