#!/bin/sh
# mmdebstrap --customize-hook for the lab's Debian cloud image (lab/cloud_image.py).
# $1 is the root directory; /proc, /sys and /dev are mounted in it while this runs.
# Every change says why: see "Cloud image" in tests/lab/README.md.
set -eu
root=$1

# cloud-init: NoCloud seed only (and None), so it never probes the network for
# EC2/OpenStack metadata; /etc/hosts from the template so `hostname -f` gives the
# FQDN whatever the seed says. 99_ sorts after the package's debconf 90_dpkg.cfg.
cat >"$root/etc/cloud/cloud.cfg.d/99_lab.cfg" <<'EOF'
# teuthology lab cloud image (tests/lab/cloud-image-customize.sh)
datasource_list: [NoCloud, None]
manage_etc_hosts: true
EOF

# Without a locale, cloud-init's locale module fails and status becomes "error".
echo 'LANG=C.UTF-8' >"$root/etc/default/locale"

# ds-identify runs as a systemd generator, before udev loads any module: the
# seed CD-ROM must already be /dev/sr0 then, or cloud-init disables itself.
printf '%s\n' ata_piix sr_mod cdrom >>"$root/etc/initramfs-tools/modules"

# The pc machine has a floppy controller but no drive: probing it costs seconds under TCG.
echo 'blacklist floppy' >"$root/etc/modprobe.d/lab-no-floppy.conf"

# Root is one unpartitioned ext4 on the virtio disk (mke2fs -d, no boot loader).
echo 'LABEL=cloudimg-rootfs / ext4 defaults,errors=remount-ro 0 1' >"$root/etc/fstab"

# mmdebstrap copies the build host's resolv.conf and hostname: none of the host in the image.
: >"$root/etc/resolv.conf"
echo localhost >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# No host keys in the image: every VM gets the seed's (ssh_keys) or new ones from cloud-init.
rm -f "$root"/etc/ssh/ssh_host_*

# The done signal: once cloud-init's final stage has finished, a line on the
# serial console, then the seed CD-ROM is ejected (the tray opens; the host sees
# it in QEMU's query-block or libvirt's domain XML), as downburst's --wait expects.
cat >"$root/usr/local/sbin/lab-cloud-init-done" <<'EOF'
#!/bin/sh
# cloud-final.service has finished, so cloud-init has written result.json with
# every stage's errors. Read it with grep: `cloud-init status` would take ~10 s
# of Python start-up under TCG before the signal.
if [ ! -e /run/cloud-init/result.json ]; then
  status=unknown
elif grep -q '"errors": \[\]' /run/cloud-init/result.json; then
  status=done
else
  status=error
fi
if eject /dev/sr0; then ejected=yes; else ejected=no; fi
echo "LAB-CLOUD-INIT-DONE status=${status:-unknown} ejected=$ejected"
EOF
chmod 0755 "$root/usr/local/sbin/lab-cloud-init-done"
cat >"$root/etc/systemd/system/lab-cloud-init-done.service" <<'EOF'
[Unit]
Description=Signal the host that cloud-init is done (console line, CD-ROM eject)
After=cloud-final.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lab-cloud-init-done
StandardOutput=journal+console

[Install]
WantedBy=cloud-init.target
EOF

# Optional RHEL-like behaviour: RHEL-family images run sshd-keygen before sshd,
# which adds host keys of every type nobody injected. Off unless the seed's
# meta-data says `lab: {sshd_keygen: true}` (read from cloud-init's instance data).
cat >"$root/usr/local/sbin/lab-sshd-keygen-wanted" <<'EOF'
#!/usr/bin/python3
"""Exit 0 when the seed's meta-data has lab: {sshd_keygen: true}, else 1 (unit skipped)."""
import json
import sys

try:
    with open("/run/cloud-init/instance-data.json") as f:
        meta_data = json.load(f)["ds"]["meta_data"]
except (OSError, ValueError, KeyError, TypeError):
    sys.exit(1)
lab = meta_data.get("lab") if isinstance(meta_data, dict) else None
sys.exit(0 if isinstance(lab, dict) and lab.get("sshd_keygen") is True else 1)
EOF
chmod 0755 "$root/usr/local/sbin/lab-sshd-keygen-wanted"
cat >"$root/etc/systemd/system/lab-sshd-keygen.service" <<'EOF'
[Unit]
Description=Generate missing SSH host keys before sshd, like RHEL's sshd-keygen (when the seed asks)
# After cloud-init's network stage, where its ssh module writes the seed's keys.
After=cloud-init.service
Before=ssh.service

[Service]
Type=oneshot
ExecCondition=/usr/local/sbin/lab-sshd-keygen-wanted
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
EOF

chroot "$root" systemctl enable lab-cloud-init-done.service lab-sshd-keygen.service
# e2scrub_reap.service scans LVM snapshots at boot: none here, and it is slow under TCG.
chroot "$root" systemctl mask e2scrub_reap.service

# Rebuild the initramfs with the modules above (and the floppy blacklist).
chroot "$root" update-initramfs -u -k all

# apt's lists are 60+ MB and stale by the time a VM boots.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
