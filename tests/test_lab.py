"""Smoke test of the local lab, end to end through real SSH, libvirt and QEMU.

Two vpshosts (real sshd on 127.0.1.x), the downburst stand-in on one's PATH and
under /home on the other, guests booted with `create --wait` and checked with
the real ssh-keyscan.  Guest boots are ~5-10 s each under software emulation.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from lab import Lab, VPSHost, free_port, keyscan, lab_domains
from lab.daemons import virsh
from lab.sshd import strict_ssh_options

HOME_DOWNBURST = "/home/ubuntu/src/downburst/virtualenv/bin/downburst"
ERROR_LINE = re.compile(r"^ERROR:downburst\.cli:", re.M)


@pytest.fixture(scope="module")
def local_lab():
    with Lab() as lab_:
        lab_.start_vpshosts(1)
        lab_.start_vpshosts(1, with_downburst=False)
        yield lab_


@pytest.fixture(scope="module")
def host1(local_lab: Lab) -> VPSHost:
    return local_lab.vpshosts[0]


@pytest.fixture(scope="module")
def host2(local_lab: Lab) -> VPSHost:
    return local_lab.vpshosts[1]


def downburst(
    host: VPSHost, *args: str, env: dict[str, str] | None = None, exe: str = "downburst", timeout: float = 360
) -> subprocess.CompletedProcess[str]:
    env = {"DOWNBURST_STANDIN_WAIT": "120", **(env or {})}  # fail faster than downburst's 300 s
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in env.items())
    return host.run(prefix + shlex.join([exe, *args]), timeout=timeout)


def write_meta(host: VPSHost, name: str, data: dict) -> str:
    path = f"/home/ubuntu/{name}"
    host.write_file(path, yaml.safe_dump(data))
    return path


def domain_names() -> list[str]:
    return virsh("list", "--all", "--name").stdout.split()


def guest_ssh(local_lab: Lab, port: int, known_hosts: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh",
            *strict_ssh_options(known_hosts, connect_timeout=20),
            "-i",
            str(local_lab.client_key),
            "-p",
            str(port),
            "root@127.0.0.1",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60, check=False,
    )


def test_vpshosts(local_lab: Lab, host1: VPSHost, host2: VPSHost) -> None:
    assert (host1.address, host2.address) == ("127.0.1.1", "127.0.1.2")
    assert host1.run("downburst --help").returncode == 0
    assert host2.run("command -v downburst").returncode != 0  # discovery tests need this
    # /home is private per vpshost.
    local_lab.install_downburst(host2, HOME_DOWNBURST)
    assert host2.run(f"test -x {HOME_DOWNBURST}").returncode == 0
    assert host1.run(f"test -e {HOME_DOWNBURST}").returncode != 0
    assert not Path(HOME_DOWNBURST).exists()
    # Strict host key checking works against the recorded host keys only.
    vars_ = host1.inventory_vars()
    assert "StrictHostKeyChecking=yes" in vars_["ansible_ssh_common_args"]
    assert Path(vars_["lab_known_hosts_file"]).read_text().startswith("127.0.1.1 ")
    wrong = host2.ssh_command("true")
    wrong[wrong.index(f"root@{host2.address}")] = f"root@{host1.address}"
    assert subprocess.run(wrong, capture_output=True, timeout=60, check=False).returncode == 255


def test_create_destroy_fresh_host_keys(local_lab: Lab, host1: VPSHost, tmp_path: Path) -> None:
    port = free_port()
    meta = write_meta(
        host1,
        "vpm001.meta.yaml",
        {
            "public-keys": [local_lab.client_pubkey.read_text().strip()],
            "downburst": {"ram": "3.8G", "disk-size": "100G", "cpus": 1},
            "lab": {"ssh_port": port},
        },
    )
    user = "/home/ubuntu/vpm001.user.yaml"
    host1.write_file(user, "#cloud-config\npackages: [python3]\n")
    create = ["-c", "qemu:///system", "create", "--wait", "--nokey", f"--meta-data={meta}", f"--user-data={user}", "vpm001"]

    r = downburst(host1, *create)
    assert r.returncode == 0, r.stderr
    assert "vpm001" in domain_names()
    first = keyscan(port)
    assert {k for k, _ in first} == {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}
    # Root login with the meta-data public key, host key pinned from the scan.
    known = tmp_path / "known_hosts"
    known.write_text("".join(f"[127.0.0.1]:{port} {t} {b}\n" for t, b in first))
    login = guest_ssh(local_lab, port, known, "hostname; id -u")
    assert login.stdout.split() == ["vpm001", "0"], login.stderr

    again = downburst(host1, *create)
    assert again.returncode == 1 and "exists" in again.stderr and ERROR_LINE.search(again.stderr)

    assert downburst(host1, "destroy", "vpm001").returncode == 0
    assert "vpm001" not in domain_names()

    r = downburst(host1, *create)
    assert r.returncode == 0, r.stderr
    second = keyscan(port)
    assert second and not first & second  # every boot brings new host keys
    assert downburst(host1, "-c", "qemu:///system", "destroy", "vpm001").returncode == 0
    assert "vpm001" not in domain_names()


def _keypair(tmp_path: Path, ktype: str, pem: bool = False) -> tuple[str, str]:
    key = tmp_path / f"injected_{ktype}"
    cmd = ["ssh-keygen", "-q", "-t", ktype, "-N", "", "-f", str(key)] + (["-m", "PEM"] if pem else [])
    subprocess.run(cmd, check=True, timeout=60)
    return key.read_text(), Path(f"{key}.pub").read_text().strip()


def test_injected_ssh_keys(local_lab: Lab, host2: VPSHost, tmp_path: Path) -> None:
    ssh_keys: dict[str, str] = {}
    for ktype, pem in (("ed25519", False), ("ecdsa", False), ("rsa", True)):
        ssh_keys[f"{ktype}_private"], ssh_keys[f"{ktype}_public"] = _keypair(tmp_path, ktype, pem)
    injected = {tuple(ssh_keys[f"{k}_public"].split()[:2]) for k in ("ed25519", "ecdsa", "rsa")}
    user_text = "#cloud-config\n" + yaml.safe_dump({"ssh_keys": ssh_keys})
    local_file = tmp_path / "user.yaml"
    local_file.write_text(user_text)
    schema = subprocess.run(["cloud-init", "schema", "--config-file", str(local_file)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert schema.returncode == 0, schema.stdout + schema.stderr

    port = free_port()
    local_lab.set_slots({"vpm002": port})  # no lab.ssh_port: the slot map decides
    user = "/home/ubuntu/vpm002.user.yaml"
    host2.write_file(user, user_text, 0o600)
    meta = write_meta(host2, "vpm002.meta.yaml", {"public-keys": {"lab": local_lab.client_pubkey.read_text().strip()}})
    create = ["create", "--wait", "--nokey", "--meta-data", meta, "--user-data", user, "vpm002"]
    r = downburst(host2, *create, exe=HOME_DOWNBURST)
    assert r.returncode == 0, r.stderr
    assert keyscan(port) == injected
    assert downburst(host2, "destroy", "vpm002", exe=HOME_DOWNBURST).returncode == 0

    # An image that ignores cloud-init's ssh_keys serves keys of its own.
    ignoring = write_meta(host2, "vpm002.ignore.yaml", {"lab": {"ignore_ssh_keys": True}})
    r = downburst(host2, *create[:-1], "--meta-data", ignoring, "vpm002", exe=HOME_DOWNBURST)
    assert r.returncode == 0, r.stderr
    served = keyscan(port)
    assert served and not served & injected
    assert downburst(host2, "destroy", "vpm002", exe=HOME_DOWNBURST).returncode == 0


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["create", "--nokey", "vpm003"], {"DOWNBURST_STANDIN_FAIL": "create"}, "Injected failure"),
        (["create", "--nokey", "--meta-data", "/home/ubuntu/fail.yaml", "vpm003"], {}, "Injected failure"),
        (["create", "vpm003"], {}, "teuthology-ubuntu.pub"),
        (["create", "--nokey", "--meta-data", "/home/ubuntu/cpus.yaml", "vpm003"], {}, "cpus"),
        (["create", "--nokey", "--meta-data", "/home/ubuntu/ram.yaml", "vpm003"], {}, "ram"),
    ],
)
def test_create_failures(host1: VPSHost, args: list[str], env: dict[str, str], needle: str) -> None:
    write_meta(host1, "fail.yaml", {"lab": {"fail": "create"}})
    write_meta(host1, "cpus.yaml", {"downburst": {"cpus": "1"}})
    write_meta(host1, "ram.yaml", {"downburst": {"ram": "lots"}})
    r = downburst(host1, *args, env=env)
    assert r.returncode == 1
    assert ERROR_LINE.search(r.stderr) and needle in r.stderr, r.stderr
    assert "vpm003" not in domain_names()


def test_bad_arguments_and_missing_destroy(host1: VPSHost) -> None:
    assert downburst(host1, "create", "--nokey").returncode == 2
    assert downburst(host1, "create", "--bogus", "vpm004").returncode == 2
    assert downburst(host1, "destroy", "no-such-vm").returncode == 0
    r = downburst(host1, "-v", "-l", "/home/ubuntu/downburst.log", "destroy", "no-such-vm")
    assert r.returncode == 0
    assert "DEBUG:downburst" in host1.path("/home/ubuntu/downburst.log").read_text()


def test_boot_and_destroy_failures(local_lab: Lab, host1: VPSHost) -> None:
    port = free_port()
    meta = write_meta(host1, "vpm005.meta.yaml", {"lab": {"ssh_port": port}})
    r = downburst(
        host1,
        "create",
        "--wait",
        "--nokey",
        "--meta-data",
        meta,
        "vpm005",
        env={"DOWNBURST_STANDIN_FAIL": "boot", "DOWNBURST_STANDIN_WAIT": "8"},
    )
    assert r.returncode == 1 and ERROR_LINE.search(r.stderr) and "never came up" in r.stderr
    assert virsh("domstate", "vpm005").stdout.strip() == "running"  # left running, like downburst
    assert lab_domains()["vpm005"]["ssh-port"] == str(port)
    assert not keyscan(port, timeout=3)

    r = downburst(host1, "destroy", "vpm005", env={"DOWNBURST_STANDIN_FAIL": "destroy"})
    assert r.returncode == 1 and ERROR_LINE.search(r.stderr)
    assert "vpm005" in domain_names()
    assert downburst(host1, "destroy", "vpm005").returncode == 0
    assert "vpm005" not in domain_names()
