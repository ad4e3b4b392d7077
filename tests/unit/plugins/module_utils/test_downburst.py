# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""downburst: meta-data, user-data, command lines, error reports and where the executable is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.teuthology.lab.plugins.module_utils.downburst import (
    CHECKOUT_SUBPATH,
    CreateOutcome,
    DownburstError,
    check_retries,
    checkout_candidates,
    create_argv,
    create_record,
    destroy_argv,
    end_running_create,
    error_lines,
    find_executable,
    libvirt_alias,
    memory_file,
    meta_data,
    run_downburst,
    says_exists,
    shortname,
    user_data,
    user_data_text,
    was_absent,
)

SETTINGS = {
    "hostname": "vpm001.front.sepia.ceph.com",
    "os_type": "ubuntu",
    "os_version": "22.04",
    "arch": "x86_64",
    "mac_address": None,
    "network": "front",
    "cpus": 2,
    "ram": "3.8G",
    "disk_size": "100G",
    "additional_disks": 0,
    "additional_disks_size": "100G",
    "public_keys": [],
}


def test_shortname_is_the_name_up_to_the_first_dot():
    assert shortname("vpm001.front.sepia.ceph.com") == "vpm001"
    assert shortname("vpm_002") == "vpm_002"


@pytest.mark.parametrize("name", ["", ".front.sepia.ceph.com", "-rf.example.com", "vpm 001.example.com", "vpm;id.example.com", "vpm001\n"])
def test_shortname_refuses_names_that_are_no_vm_name(name):
    with pytest.raises(DownburstError) as error:
        shortname(name)
    assert f"name: {name!r} does not start with a valid VM name" in str(error.value)


def test_meta_data_types_and_what_is_left_out():
    meta = meta_data(**{**SETTINGS, "cpus": "4", "ram": " 512M ", "os_type": None, "public_keys": ["", " ssh-ed25519 AAAA me \n"]})
    settings = meta["downburst"]
    assert settings["cpus"] == 4 and isinstance(settings["cpus"], int)  # downburst's template wants a number
    assert settings["ram"] == "512M"
    assert "distro" not in settings  # not given: downburst's default
    assert "networks" not in settings  # no MAC address: downburst's default network
    assert meta["public-keys"] == ["ssh-ed25519 AAAA me"]  # blank keys dropped, each stripped
    assert meta["local-hostname"] == "vpm001.front.sepia.ceph.com"  # the FQDN, as teuthology gives it
    # JSON is what the module writes; it must round-trip unchanged.
    assert json.loads(json.dumps(meta)) == meta


def test_meta_data_extra_top_level_keys_stay_top_level():
    meta = meta_data(**SETTINGS, extra={"runcmd": ["true"], "downburst": {"cpus": 8}})
    assert meta["runcmd"] == ["true"]
    assert meta["downburst"]["cpus"] == 8  # extra downburst settings override the computed ones


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"ram": "lots"}, "ram: 'lots' is not a size downburst reads"),
        ({"disk_size": "100 GB of disk"}, "disk_size: '100 GB of disk' is not a size downburst reads"),
        ({"additional_disks_size": ""}, "additional_disks_size: '' is not a size downburst reads"),
        ({"os_type": "ubuntu; reboot"}, "os_type: 'ubuntu; reboot' is not valid"),
        ({"os_version": "22.04\n"}, "os_version: '22.04\\n' is not valid"),
        ({"arch": "$(uname -m)"}, "arch: '$(uname -m)' is not valid"),
        ({"cpus": 0}, "cpus must be at least 1"),
        ({"additional_disks": -1}, "additional_disks at least 0"),
        ({"hostname": "vpm001 -x"}, "name: 'vpm001 -x' is not a host name"),
    ],
)
def test_meta_data_refuses_bad_input_naming_it(override, message):
    with pytest.raises(DownburstError) as error:
        meta_data(**{**SETTINGS, **override})
    assert message in str(error.value)


def test_meta_data_with_mac_address_pins_the_network():
    meta = meta_data(**{**SETTINGS, "mac_address": "52:54:00:00:00:01"})
    assert meta["downburst"]["networks"] == [{"source": "front", "mac": "52:54:00:00:00:01"}]


def test_user_data_serves_exactly_the_given_keys():
    pairs = {"ed25519": {"private": "PRIVATE-ED", "public": "ssh-ed25519 AAAA\n"},
             "rsa": {"private": "PRIVATE-RSA", "public": "ssh-rsa BBBB"}}
    teuthologys = {"user": "ubuntu", "manage_etc_hosts": True}  # the default user's name; hostname -f is the FQDN
    assert user_data("ubuntu", pairs) == {
        **teuthologys,
        "ssh_deletekeys": True,  # no key types cloud-init would make on its own
        "ssh_keys": {"ed25519_private": "PRIVATE-ED", "ed25519_public": "ssh-ed25519 AAAA",
                     "rsa_private": "PRIVATE-RSA", "rsa_public": "ssh-rsa BBBB"},
    }
    assert user_data("ubuntu", None) == teuthologys == user_data("ubuntu", {})
    assert user_data("cloud-user", None)["user"] == "cloud-user"
    assert user_data_text({}).startswith("#cloud-config\n")


def test_user_data_refuses_unknown_key_types_and_bad_users():
    with pytest.raises(DownburstError, match="host_keys: 'dsa' is not one of ed25519, ecdsa, rsa"):
        user_data("ubuntu", {"dsa": {"private": "x", "public": "ssh-dss AAAA"}})
    for user in ("root; id", "Ubuntu", "", "a" * 40):
        with pytest.raises(DownburstError, match=r"user: .* is not a user name"):
            user_data(user, None)


def test_libvirt_alias_is_read_from_the_users_libvirt_conf(tmp_path):
    conf = tmp_path / ".config/libvirt/libvirt.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text('# managed\nuri_aliases = [\n  "mira001=qemu+ssh://ubuntu@mira001.front.sepia.ceph.com/system?no_tty=1",\n]\n')
    assert libvirt_alias("mira001", str(tmp_path)) == "qemu+ssh://ubuntu@mira001.front.sepia.ceph.com/system?no_tty=1"
    with pytest.raises(DownburstError) as error:
        libvirt_alias("mira002", str(tmp_path))
    assert f"no uri_aliases entry 'mira002' in {conf} or {tmp_path}/.libvirt/libvirt.conf" in str(error.value)
    legacy = tmp_path / ".libvirt/libvirt.conf"  # older libvirt's place
    legacy.parent.mkdir()
    legacy.write_text('uri_aliases = [ "mira002=qemu+ssh://ubuntu@mira002/system" ]\n')
    assert libvirt_alias("mira002", str(tmp_path)) == "qemu+ssh://ubuntu@mira002/system"


def test_a_recorded_create_is_ended_and_a_stale_record_is_dropped(tmp_path):
    record = create_record(str(tmp_path), "qemu:///system", "vpm001")
    assert record.startswith(str(tmp_path / ".cache/teuthology-lab/downburst"))
    # A "downburst" that runs until ended: the record names its process group while it runs.
    done = {}
    runner = threading.Thread(target=lambda: done.update(result=run_downburst(["sleep", "60"], record=record)))
    runner.start()
    deadline = time.monotonic() + 10
    while not os.path.exists(record) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert end_running_create(record, grace=5) is True
    runner.join(timeout=15)
    assert done["result"][0] == -15  # SIGTERM
    assert not os.path.exists(record)
    # A record whose process is gone (or whose pid was reused) ends nothing, and is removed.
    with open(record, "w") as f:
        json.dump({"pgid": os.getpid(), "started": "1"}, f)
    assert end_running_create(record) is False and not os.path.exists(record)
    assert end_running_create(record) is False  # no record at all


def test_create_and_destroy_are_argument_vectors():
    argv = create_argv("/usr/bin/downburst", "qemu:///system", "vpm001", "/tmp/d/meta", "/tmp/d/user", fetch_default_key=False)
    assert argv == ["/usr/bin/downburst", "-c", "qemu:///system", "create", "--wait", "--nokey",
                    "--meta-data=/tmp/d/meta", "--user-data=/tmp/d/user", "vpm001"]
    assert "--nokey" not in create_argv("downburst", "qemu:///system", "vpm001", "m", "u", fetch_default_key=True)
    assert destroy_argv("downburst", "qemu+ssh://root@mira001/system", "vpm001") == [
        "downburst", "-v", "-c", "qemu+ssh://root@mira001/system", "destroy", "vpm001"]


@pytest.mark.parametrize("uri", ["", "qemu:///system; reboot", "mira 001", "qemu:///sys tem", "-c", "qemu:///system\n"])
def test_bad_libvirt_uri_is_refused_before_any_command(uri):
    with pytest.raises(DownburstError) as error:
        create_argv("downburst", uri, "vpm001", "m", "u", fetch_default_key=False)
    assert f"libvirt_uri: {uri!r} is not a libvirt URI (e.g. qemu:///system) or URI alias" in str(error.value)
    with pytest.raises(DownburstError):
        destroy_argv("downburst", uri, "vpm001")


def test_error_lines_are_downburst_errors_else_the_tail():
    stderr = "INFO:downburst:Creating vpm001\nTraceback (most recent call last):\n  File x\nlibvirtError: domain 'vpm001' already exists\n"
    assert error_lines(stderr) == ["libvirtError: domain 'vpm001' already exists"]
    assert says_exists(stderr)
    plain = "\n".join(f"line {i}" for i in range(10)) + "\n\n"
    assert error_lines(plain) == [f"line {i}" for i in range(5, 10)]
    assert error_lines("") == []
    assert not says_exists("ERROR: cannot connect to qemu:///system\n")
    # A path that happens to contain "exists" on a non-error line is not the VM existing.
    assert not says_exists("INFO: using /srv/exists/image.qcow2\nERROR: no space left\n")


def test_retries_must_not_be_negative():
    assert check_retries(0) == 0 and check_retries(3) == 3
    with pytest.raises(DownburstError) as error:
        check_retries(-1)
    assert str(error.value) == "retries: -1 is negative; give 0 (never destroy a leftover VM) or more"


def test_a_failed_destroy_of_a_leftover_is_not_reported_as_a_failed_create():
    stderr = "DEBUG:downburst.destroy:Terminating the virtual machine\nERROR:downburst.cli:downburst destroy: permission denied\n"
    destroy = destroy_argv("/opt/downburst", "qemu:///system", "vpm001")
    assert CreateOutcome(1, 1, stderr, destroy, leftover_kept=True).error("vpm001") == (
        "downburst create found a leftover VM vpm001, and destroying it failed (exit 1): "
        "ERROR:downburst.cli:downburst destroy: permission denied (command: /opt/downburst -v -c qemu:///system destroy vpm001)")
    create = create_argv("/opt/downburst", "qemu:///system", "vpm001", "m", "u", fetch_default_key=False)
    assert CreateOutcome(1, 2, "ERROR: no space left\n", create).error("vpm001") == "downburst create failed (exit 2): ERROR: no space left"


def test_was_absent_recognises_downburst_saying_no_vm():
    assert was_absent("DEBUG:downburst.destroy:No virtual machine found with name vpm001\n")
    assert not was_absent("ERROR: permission denied\n")


def executable(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_find_executable_order_and_what_was_searched(tmp_path):
    home = tmp_path / "home"
    on_path = executable(tmp_path / "bin" / "downburst")
    assert find_executable(None, lambda name: on_path, str(home)) == (on_path, ["downburst on PATH"])
    checkout = executable(home / CHECKOUT_SUBPATH)
    found, searched = find_executable(None, lambda name: None, str(home))
    assert (found, searched) == (checkout, ["downburst on PATH", checkout])
    explicit = executable(tmp_path / "opt" / "downburst")
    assert find_executable(explicit, lambda name: on_path, str(home)) == (explicit, [explicit])


def test_find_executable_failures_say_where_it_looked(tmp_path):
    if any(os.path.exists(path) for path in checkout_candidates(str(tmp_path))):
        pytest.skip("this machine has a downburst checkout under /home/ubuntu or /home/teuthology")
    not_executable = tmp_path / "downburst"
    not_executable.write_text("")
    with pytest.raises(DownburstError, match=f"executable: {not_executable} is not an executable file"):
        find_executable(str(not_executable), lambda name: None, str(tmp_path))
    with pytest.raises(DownburstError) as error:
        find_executable(None, lambda name: None, str(tmp_path))
    assert str(error.value) == "downburst not found; looked at: downburst on PATH, " + ", ".join(checkout_candidates(str(tmp_path)))


def test_checkout_candidates_in_teuthology_order_without_duplicates():
    assert checkout_candidates("/home/alice") == [f"/home/alice/{CHECKOUT_SUBPATH}", f"/home/ubuntu/{CHECKOUT_SUBPATH}",
                                                  f"/home/teuthology/{CHECKOUT_SUBPATH}"]
    assert checkout_candidates("/home/ubuntu") == [f"/home/ubuntu/{CHECKOUT_SUBPATH}", f"/home/teuthology/{CHECKOUT_SUBPATH}"]


def test_memory_file_is_read_by_the_child_it_is_given_to_only():
    text = "#cloud-config\n" + "x" * 100_000 + "\n"  # larger than a pipe's buffer
    fd = memory_file("user-data", text)
    # As downburst reads a user-data file: its first line, then from the start again.
    reader = [sys.executable, "-c", "import sys; f = open(sys.argv[1]); f.readline(); f.seek(0); sys.stdout.write(f.read())"]
    try:
        for _attempt in range(2):  # a retried create opens it anew, from the start
            given = subprocess.run([*reader, f"/dev/fd/{fd}"], pass_fds=(fd,), capture_output=True, text=True, check=False)
            assert given.stdout == text, given.stderr
        other = subprocess.run([*reader, f"/dev/fd/{fd}"], capture_output=True, text=True, check=False)
        assert other.returncode != 0  # not inherited unless given
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:user-data")  # in memory, no path on disk
    finally:
        os.close(fd)
