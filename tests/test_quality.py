"""The ecosystem's quality gates: ansible-lint (production profile) and the changelog."""

from __future__ import annotations

import subprocess

import yaml

from support.ansible_run import BIN, REPO, ansible_env


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    """A tool of the venv, run from the collection root with the collection on the collections path."""
    return subprocess.run([BIN / argv[0], *argv[1:]], env=ansible_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=600, check=False)


def test_ansible_lint_production():
    """Roles, playbooks, the molecule scenario and the collection metadata pass the production profile.

    .ansible-lint sets the profile and offline: true (no Galaxy, no version check, no schema refresh).
    """
    proc = run_tool("ansible-lint", "--nocolor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stderr, proc.stderr


def test_changelog_lint():
    proc = run_tool("antsibull-changelog", "lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "", proc.stdout  # lint prints the problems it finds
    # galaxy.yml's version is released in changelogs/changelog.yaml (CHANGELOG.md is generated from it).
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    changes = yaml.safe_load((REPO / "changelogs/changelog.yaml").read_text())
    assert version in changes["releases"], sorted(changes["releases"])
    assert f"v{version}".replace(".", "\\.") in (REPO / "CHANGELOG.md").read_text()
