# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_keys: what a valid host key is, ssh-keyscan's command and output, pinning."""

from __future__ import annotations

import base64
import re
import shlex
import struct

import pytest

from ansible_collections.teuthology.lab.plugins.module_utils.host_keys import (
    HostKeyError,
    check_host,
    control_path,
    keyscan_argv,
    known_hosts_command,
    known_hosts_lines,
    normalize_host_keys,
    parse_keyscan,
    pinned_ssh_vars,
    scan_host_keys,
)


def blob(key_type: str, payload: bytes = b"\x00" * 32) -> str:
    """A base64 key blob as ssh writes it: an SSH string naming the type, then key data."""
    return base64.b64encode(struct.pack(">I", len(key_type)) + key_type.encode() + struct.pack(">I", len(payload)) + payload).decode()


ED25519 = "ssh-ed25519 " + blob("ssh-ed25519")
ECDSA = "ecdsa-sha2-nistp256 " + blob("ecdsa-sha2-nistp256", b"\x04" * 65)
RSA = "ssh-rsa " + blob("ssh-rsa", b"\x01" * 64)


def test_normalize_sorts_dedups_and_drops_comments():
    text = f"\n{RSA} root@vpm001\n{ED25519}\n   \n{ECDSA} a comment with spaces\n{ED25519} again\n"
    assert normalize_host_keys(text) == "\n".join([ECDSA, ED25519, RSA])
    # The same keys in another order are the same text: what the lock database stores and compares.
    assert normalize_host_keys(f"{ED25519}\n{ECDSA}\n{RSA}") == normalize_host_keys(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key given"),
        ("\n  \n", "no key given"),
        ("AAAAC3NzaC1lZDI1NTE5", "'AAAAC3NzaC1lZDI1NTE5' is not 'TYPE BASE64 [comment]'"),
        (f"ssh-foo {blob('ssh-foo')}", "'ssh-foo' is not a known SSH key type (ecdsa-sha2-nistp256, "),
        ("ssh-ed25519 not!base64", "the key of type ssh-ed25519 is not valid base64 key data"),
        ("ssh-ed25519 AAAA", "the key of type ssh-ed25519 is not valid base64 key data"),  # too short for a length
        (f"ssh-ed25519 {blob('ssh-rsa')}", "the key data says 'ssh-rsa' but the line says 'ssh-ed25519'"),
        # One bad line among good ones spoils the lot: nothing half-valid is recorded.
        (f"{ED25519}\nssh-rsa $(reboot)", "the key of type ssh-rsa is not valid base64 key data"),
    ],
)
def test_normalize_refuses_bad_keys_naming_them(text, message):
    with pytest.raises(HostKeyError) as error:
        normalize_host_keys(text)
    assert message in str(error.value)


def test_blob_whose_length_field_overruns_the_data_is_refused():
    overrun = base64.b64encode(struct.pack(">I", 200) + b"ssh-ed25519").decode()
    with pytest.raises(HostKeyError, match="not valid base64 key data"):
        normalize_host_keys(f"ssh-ed25519 {overrun}")


@pytest.mark.parametrize("host", ["vpm001.front.sepia.ceph.com", "127.0.0.1", "fe80::1", "node_1"])
def test_check_host_accepts_names_and_addresses(host):
    assert check_host(host) == host


# "vpm001\n": a trailing newline must not slip through an anchored pattern.
@pytest.mark.parametrize("host", ["", None, "-oProxyCommand=touch /tmp/x", "-p", "a b", "host;reboot", "$(id)", "vpm001\n"])
def test_check_host_refuses_options_and_shell_characters(host):
    with pytest.raises(HostKeyError) as error:
        check_host(host)
    assert f"{host!r} is not a host name or address" in str(error.value)


def test_keyscan_argv_is_an_argument_vector_asking_for_every_default_type():
    argv = keyscan_argv("vpm001.front.sepia.ceph.com", 2222, 5)
    assert argv == ["ssh-keyscan", "-T", "5", "-p", "2222", "-t", "ed25519,ecdsa,rsa", "vpm001.front.sepia.ceph.com"]
    assert all(isinstance(arg, str) for arg in argv)
    assert keyscan_argv("h", 22, 1, types=("rsa",))[-2:] == ["rsa", "h"]


def test_parse_keyscan_keeps_keys_without_host_and_comments():
    output = (
        "# vpm001:22 SSH-2.0-OpenSSH_9.2p1 Debian-2\n"
        f"vpm001 {RSA}\n"
        "# vpm001:22 SSH-2.0-OpenSSH_9.2p1 Debian-2\n"
        f"vpm001 {ED25519}\n"
        f"[vpm001]:2222 {ECDSA}\n"
        "\n"
    )
    assert parse_keyscan(output) == "\n".join([ECDSA, ED25519, RSA])


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("", "no key given"),
        ("# vpm001:22 SSH-2.0-OpenSSH_9.2p1\n", "no key given"),
        (f"vpm001 {ED25519}\nvpm001 ssh-rsa garbage!\n", "the key of type ssh-rsa is not valid base64 key data"),
    ],
)
def test_parse_keyscan_refuses_output_without_valid_keys(output, message):
    with pytest.raises(HostKeyError, match=message):
        parse_keyscan(output)


def test_known_hosts_lines_name_the_alias_once_per_key():
    lines = known_hosts_lines("vpm001.front.sepia.ceph.com", f"{ED25519} comment\n{RSA}")
    assert lines == [f"vpm001.front.sepia.ceph.com {ED25519}", f"vpm001.front.sepia.ceph.com {RSA}"]


def test_known_hosts_command_prints_exactly_the_known_hosts_lines():
    command = known_hosts_command("vpm001", f"{ED25519}\n{RSA}")
    words = shlex.split(command)
    assert words[0] == "/usr/bin/printf"  # ssh requires an absolute path
    assert words[1] == "%%s %%s %%s\\n"  # ssh expands % tokens: %% is a literal %
    assert words[2:] == " ".join(known_hosts_lines("vpm001", f"{ED25519}\n{RSA}")).split()


def test_pinned_ssh_vars_check_the_recorded_keys_strictly(tmp_path):
    node = {"name": "vpm001.front.sepia.ceph.com", "ssh_pub_key": ED25519, "locked_since": "2026-01-01T00:00:00+00:00"}
    pinned = pinned_ssh_vars(node, "known_hosts_command")
    args = pinned["ansible_ssh_common_args"]
    assert "-o StrictHostKeyChecking=yes" in args and "-o HostKeyAlias=vpm001.front.sepia.ceph.com" in args
    assert "-o UserKnownHostsFile=/dev/null" in args and "-o GlobalKnownHostsFile=/dev/null" in args
    assert pinned["ansible_ssh_host_key_checking"] is True
    # A known_hosts file path is quoted for the shell-like splitting ssh args get.
    path = tmp_path / "known hosts"
    file_args = pinned_ssh_vars(node, "known_hosts_file", str(path))["ansible_ssh_common_args"]
    assert f"-o UserKnownHostsFile='{path}'" in file_args
    # No other source of host keys, whatever the user's ssh_config says: no configured command, no DNS.
    assert "-o KnownHostsCommand=none" in file_args
    for words in (shlex.split(args), shlex.split(file_args)):
        assert words[-2:] == ["-o", "VerifyHostKeyDNS=no"]
        assert sum(word.startswith("KnownHostsCommand=") for word in words) == 1


@pytest.mark.parametrize(
    ("node", "mode", "error", "message"),
    [
        ({"name": "-oProxyCommand=x", "ssh_pub_key": ED25519}, "known_hosts_command", HostKeyError, "is not a node name"),
        ({"name": "vpm001\n", "ssh_pub_key": ED25519}, "known_hosts_command", HostKeyError, "is not a node name"),
        ({"name": "vpm001", "ssh_pub_key": None}, "known_hosts_command", HostKeyError, "no key given"),
        ({"name": "vpm001", "ssh_pub_key": "ssh-rsa x"}, "known_hosts_file", HostKeyError, "not valid base64"),
        ({"name": "vpm001", "ssh_pub_key": ED25519}, "none", ValueError, "no pinning in mode 'none'"),
    ],
)
def test_pinned_ssh_vars_refuse_what_cannot_be_pinned(node, mode, error, message):
    with pytest.raises(error, match=message):
        pinned_ssh_vars(node, mode, "/tmp/known_hosts")


def test_control_path_changes_with_the_keys_and_the_lock():
    node = {"name": "vpm001", "ssh_pub_key": ED25519, "locked_since": "2026-01-01T00:00:00+00:00", "ssh_port": 22}
    path = control_path(node)
    assert path.startswith("%(directory)s/tlab-") and path == control_path(dict(node))
    assert control_path({**node, "ssh_pub_key": RSA}) != path  # reinstalled VM: new master
    assert control_path({**node, "locked_since": "2026-01-02T00:00:00+00:00"}) != path  # locked again
    assert control_path({**node, "ssh_host": "127.0.0.2"}) != path  # moved


def test_control_path_leaves_user_and_port_to_ssh():
    """Ansible formats the path with %(directory)s (so %% becomes %), then ssh expands %r and %p."""
    node = {"name": "vpm001", "ssh_pub_key": ED25519, "locked_since": "2026-01-01T00:00:00+00:00", "ssh_port": 22}
    formatted = control_path(node) % {"directory": "/home/teuthworker/.ansible/cp"}
    assert re.fullmatch(r"/home/teuthworker/\.ansible/cp/tlab-[0-9a-f]{10}-%r@%p", formatted)
    # Short enough for a unix socket (108 bytes, 104 on BSD) with a 32-character user, port 65535 and the
    # 17 characters ssh appends while it sets the master up.
    longest = formatted.replace("%r", "u" * 32).replace("%p", "65535")
    assert len(longest) + 17 < 104


def test_scan_asks_one_type_at_a_time_and_again_for_a_type_that_stalled():
    """Right after a boot one ssh-keyscan for every type can come back without the key that
    stalled: each type is asked on its own, and a missing one again (the real scans run on
    real VMs in tests/test_provision.py; here the answers are scripted)."""
    ed25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    answers = {"ed25519": ["", f"h {ed25519}\n"]}  # nothing the first time; no ecdsa or rsa key at all
    asked = []

    def run(argv):
        (key_type,) = argv[argv.index("-t") + 1].split(",")  # one type per scan
        asked.append(key_type)
        pending = answers.get(key_type, [])
        return 0, pending.pop(0) if pending else "", ""

    keys, commands = scan_host_keys(run, "127.0.0.1", 22, wait=10, attempts=3)
    assert keys == ed25519 and len(commands) == len(asked)
    assert asked == ["ed25519", "ecdsa", "rsa", "ed25519", "ecdsa", "ecdsa", "ecdsa", "rsa", "rsa", "rsa"]


def test_scan_gives_up_after_waiting():
    with pytest.raises(HostKeyError, match=r"127.0.0.1 port 2222 served no SSH host key \(waited 0 s\)"):
        scan_host_keys(lambda argv: (1, "", "connection refused"), "127.0.0.1", 2222, wait=0)
