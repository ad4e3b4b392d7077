"""teuthology.lab.host_key_pairs: fresh host keys for inject mode, made in memory."""

from __future__ import annotations

import subprocess

from support.ansible_run import run_tasks, task

EXPECTED_BITS = {"ed25519": ("256", "ED25519"), "ecdsa": ("256", "ECDSA"), "rsa": ("3072", "RSA")}


def test_pairs_are_valid_openssh_keys_of_the_default_sizes(tmp_path):
    run = run_tasks([task("host_key_pairs", "first"), task("host_key_pairs", "second")])
    assert run.returncode == 0, run.output
    first, second = run.result("first"), run.result("second")
    assert first["changed"] is False
    pairs = first["host_key_pairs"]
    assert sorted(pairs) == sorted(EXPECTED_BITS)
    for key_type, pair in pairs.items():
        private = tmp_path / key_type
        private.write_text(pair["private"])
        private.chmod(0o600)
        derived = subprocess.run(["ssh-keygen", "-y", "-f", private], capture_output=True, text=True, check=True).stdout
        assert derived.split()[:2] == pair["public"].split(), key_type
        fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", private], capture_output=True, text=True, check=True).stdout
        bits, kind = EXPECTED_BITS[key_type]
        assert fingerprint.split()[0] == bits and fingerprint.split()[-1] == f"({kind})", fingerprint
    # What the node records: the public keys, sorted; and every run makes new keys.
    assert first["ssh_pub_key"].splitlines() == sorted(pair["public"] for pair in pairs.values())
    assert not set(first["ssh_pub_key"].splitlines()) & set(second["ssh_pub_key"].splitlines())


def test_types_choose_the_keys_and_an_unknown_type_is_refused():
    run = run_tasks([
        task("host_key_pairs", "ed25519 only", types=["ed25519"]),
        task("host_key_pairs", "dsa", ignore_errors=True, types=["dsa"]),
    ])
    assert list(run.result("ed25519 only")["host_key_pairs"]) == ["ed25519"]
    refused = run.result("dsa")
    assert refused["failed"] and "types" in refused["msg"] and "dsa" in refused["msg"], refused


def test_no_log_keeps_the_private_keys_out_of_the_output():
    run = run_tasks([{**task("host_key_pairs", "keys"), "no_log": True, "register": "keys"},
                     {"name": "use them", "ansible.builtin.assert": {"that": ["keys.host_key_pairs | length == 3"]}}],
                    "-vvv")
    assert run.returncode == 0, run.output
    assert "PRIVATE KEY" not in run.output
