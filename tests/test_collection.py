"""The collection as users get it: built, installed, documented."""

from __future__ import annotations

import subprocess
import tarfile

import pytest

from support.ansible_run import BIN, REPO, ansible_env

DB_MODULES = ["lock", "unlock", "node", "node_info", "reap", "import_paddles"]
MODULES = [*DB_MODULES, "keyscan", "host_key_pairs", "downburst", "vm_domains"]
PLAYBOOKS = ["lock", "unlock", "list", "summary", "list_targets", "update_keys", "libvirt_aliases", "extend", "reap", "import_paddles"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The built tarball installed into an empty collections path."""
    build = tmp_path_factory.mktemp("build")
    subprocess.run([BIN / "ansible-galaxy", "collection", "build", "--output-path", build, REPO], check=True, capture_output=True)
    (tarball,) = build.glob("teuthology-lab-*.tar.gz")
    with tarfile.open(tarball) as tar:
        members = tar.getnames()
    assert "plugins/module_utils/lockdb.py" in members
    assert {f"playbooks/{p}.yml" for p in PLAYBOOKS} <= set(members)
    assert not any(m.startswith((".venv", ".cache", "tests/output", ".git/")) for m in members)
    path = tmp_path_factory.mktemp("collections")
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", tarball, "-p", path],
        env=ansible_env(ANSIBLE_COLLECTIONS_PATH=str(path)),
        check=True,
        capture_output=True,
    )
    assert (path / "ansible_collections/teuthology/lab/plugins/modules/lock.py").is_file()
    return path


@pytest.mark.parametrize(("plugin", "kind", "title"), [
    *[(f"teuthology.lab.{m}", "module", None) for m in MODULES],
    ("teuthology.lab.targets", "filter", "recorded SSH host keys"),
    ("teuthology.lab.locks", "inventory", "host_key_mode"),
    ("teuthology.lab.downburst", "role", "downburst_host_keys"),
    ("teuthology.lab.lock_server", "role", "lock_server_bind"),
])
def test_ansible_doc_renders_without_warnings(installed, plugin, kind, title):
    proc = subprocess.run(
        [BIN / "ansible-doc", "-t", kind, plugin],
        env=ansible_env(ANSIBLE_COLLECTIONS_PATH=str(installed)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr
    assert plugin in proc.stdout
    if kind != "role":
        assert "EXAMPLES" in proc.stdout
    if kind == "module":
        assert "RETURN VALUES" in proc.stdout
    if plugin.rsplit(".", 1)[-1] in DB_MODULES:
        assert "TEUTHOLOGY_LAB_DB" in proc.stdout
    if title:
        assert title in proc.stdout


def test_action_group_lists_every_module():
    import yaml

    runtime = yaml.safe_load((REPO / "meta/runtime.yml").read_text())
    assert sorted(runtime["action_groups"]["lab"]) == sorted(DB_MODULES)


def test_playbooks_run_from_the_installed_collection(installed, tmp_path):
    """ansible-playbook teuthology.lab.lock / .unlock with only the installed tarball on the collections path."""
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab
    from support.seed import seed

    db = f"sqlite:///{tmp_path / 'lab.db'}"
    lab = Lab(db)
    (name,) = seed(lab, "smithi", 1)
    env = ansible_env(ANSIBLE_COLLECTIONS_PATH=str(installed), TEUTHOLOGY_LAB_DB=db)

    def play(playbook, *args):
        proc = subprocess.run(
            [BIN / "ansible-playbook", "-vv", playbook, *args],
            env=env,
            cwd=tmp_path,  # away from the checkout and its ansible.cfg
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # every task (list_targets.yml's too, imported by a relative path) ran from the installed copy
        paths = [line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("task path: ")]
        assert paths, proc.stdout
        assert all(path.startswith(f"{installed}/ansible_collections/teuthology/lab/playbooks/") for path in paths), paths
        return proc.stdout

    try:
        out = play("teuthology.lab.lock", "-e", "count=1", "-e", "machine_type=smithi")
        assert "/playbooks/list_targets.yml:" in out  # imported by a relative path, from the installed copy
        assert f"ubuntu@{name}" in out  # which printed the targets
        (node,) = lab.query(names=[name])
        assert node["locked"] and node["locked_by"]

        play("teuthology.lab.unlock", "-e", "all=true")
        (node,) = lab.query(names=[name])
        assert not node["locked"] and not node["locked_by"]
    finally:
        lab.close()
