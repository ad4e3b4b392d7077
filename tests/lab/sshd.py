"""Real OpenSSH servers playing teuthology "vpshosts" on loopback addresses.

Each vpshost is /usr/sbin/sshd on 127.0.1.N (port 22 when free there, else a
free port), with its own host keys and config in the lab's run directory and
its own mount namespace in which /home is a private tmpfs, so tests can put
files under /home/... per vpshost without touching the real /home.  Logins are
as root with the lab's client key; sessions get PATH=<vpshost bin dir>:<std>.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def keygen(path: Path, ktype: str = "ed25519", comment: str = "teuthology-lab") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", ktype, "-N", "", "-C", comment, "-f", str(path)], check=True, timeout=60)
    return path


def _bindable(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def ssh_banner(address: str, port: int, timeout: float = 3.0) -> bytes | None:
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = s.recv(256)
    except OSError:
        return None
    return data if data.startswith(b"SSH-") else None


def strict_ssh_options(known_hosts: Path, connect_timeout: int) -> list[str]:
    """ssh options that check host keys against `known_hosts` only, never ~/.ssh."""
    return [
        "-F", "/dev/null",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={connect_timeout}",
    ]


def known_hosts_line(address: str, port: int, pubkey_file: Path) -> str:
    host = address if port == 22 else f"[{address}]:{port}"
    ktype, blob = pubkey_file.read_text().split()[:2]
    return f"{host} {ktype} {blob}\n"


@dataclass
class VPSHost:
    """One running vpshost; see `inventory_vars` for what Ansible needs."""

    name: str
    address: str
    port: int
    workdir: Path
    bin_dir: Path
    client_key: Path
    known_hosts: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def inventory_vars(self) -> dict[str, str | int]:
        """Host vars for an Ansible inventory entry (strict host key checking)."""
        return {
            "ansible_host": self.address,
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.client_key),
            "ansible_ssh_common_args": " ".join(self.ssh_options()),
            "ansible_python_interpreter": "/usr/bin/python3",
            # Masters of this run only: a stale master from an earlier run on the same
            # address would otherwise carry commands into that run's dead vpshost.
            "ansible_control_path_dir": str(self.workdir / "cp"),
            "lab_known_hosts_file": str(self.known_hosts),
        }

    def ssh_options(self) -> list[str]:
        return strict_ssh_options(self.known_hosts, connect_timeout=10)

    def ssh_command(self, command: str | list[str]) -> list[str]:
        remote = command if isinstance(command, str) else shlex.join(command)
        return ["ssh", *self.ssh_options(), "-i", str(self.client_key), "-p", str(self.port), f"root@{self.address}", remote]

    def run(
        self, command: str | list[str], timeout: float = 360, check: bool = False, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on the vpshost through real SSH."""
        return subprocess.run(self.ssh_command(command), capture_output=True, text=True, timeout=timeout, check=check, input=input)

    def path(self, path: str | Path) -> Path:
        """Host path of `path` as seen inside this vpshost's mount namespace."""
        return Path(f"/proc/{self.pid}/root") / Path(path).relative_to("/")

    def write_file(self, path: str | Path, data: str | bytes, mode: int = 0o644) -> None:
        target = self.path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        target.chmod(mode)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def start_vpshost(
    index: int, run_dir: Path, client_pubkey: Path, client_key: Path, timeout: float = 20, private_root: bool = False
) -> VPSHost:
    """Start vpshost number `index` (1-based) at 127.0.1.<index>.

    `private_root` also gives it a private, empty /root (the SSH user's home),
    for tests that put files under ~; such a host cannot run the stand-in,
    whose Python lives under the real /root."""
    if not Path(SSHD).exists():
        raise RuntimeError("openssh-server is missing: install tests/lab/apt-packages.txt")
    name = f"vpshost{index}"
    address = f"127.0.1.{index}"
    port = 22 if _bindable(address, 22) else _free_port(address)
    work = run_dir / name
    bin_dir = work / "bin"
    bin_dir.mkdir(parents=True)
    for ktype in ("ed25519", "ecdsa"):
        keygen(work / f"ssh_host_{ktype}_key", ktype, name)
    known_hosts = work / "known_hosts"
    known_hosts.write_text("".join(known_hosts_line(address, port, work / f"ssh_host_{k}_key.pub") for k in ("ed25519", "ecdsa")))
    shutil.copyfile(client_pubkey, work / "authorized_keys")
    config = work / "sshd_config"
    config.write_text(f"""\
# vpshost {name} of the teuthology local lab (generated)
ListenAddress {address}:{port}
HostKey {work}/ssh_host_ed25519_key
HostKey {work}/ssh_host_ecdsa_key
PidFile {work}/sshd.pid
AuthorizedKeysFile {work}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# the run dir lives under /tmp (world-writable), which StrictModes rejects
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 100:30:200
MaxSessions 50
AcceptEnv LANG LC_* DOWNBURST_STANDIN_*
SetEnv PATH={bin_dir}:{STD_PATH}
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    subprocess.run([SSHD, "-t", "-f", str(config)], check=True, capture_output=True, timeout=30)
    # Private mount namespace: a tmpfs /home only this sshd and its sessions see.
    script = 'mount -t tmpfs -o mode=755 lab-home /home && '
    if private_root:
        script += 'mount -t tmpfs -o mode=700 lab-root /root && '
    script += 'exec "$0" -D -e -f "$1"'
    with open(work / "sshd.log", "wb") as log:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, SSHD, str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    host = VPSHost(name, address, port, work, bin_dir, client_key, known_hosts, proc)
    deadline = time.monotonic() + timeout
    while ssh_banner(address, port) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            host.stop()
            raise RuntimeError(f"{name} sshd did not come up: {(work / 'sshd.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return host
