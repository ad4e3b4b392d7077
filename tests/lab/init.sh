#!/bin/busybox sh
# PID 1 of the lab guest: a busybox-only initramfs that just brings up the
# virtio NIC, serves SSH with dropbear and then ejects the seed CD-ROM.  Per-VM
# data (authorised keys, hostname, optional fixed host keys) arrives in /lab/
# from a small cpio that the downburst stand-in appends to the shared initramfs;
# the seed CD-ROM (cloud-init's NoCloud ISO) is attached as downburst attaches
# it, but only ejected: the eject is the done signal `downburst create --wait`
# watches for (the tray opens), as cloud images eject it when cloud-init is done.
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /run /var/log /root/.ssh /etc/dropbear
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
exec </dev/console >/dev/console 2>&1

log() { echo "lab-init: $*"; }

# Modules in dependency order; the image lists only those that are not built in.
for m in $(cat /etc/lab-modules); do
    insmod "/lib/modules/$m.ko" || log "insmod $m failed"
done

ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
[ -s /lab/hostname ] && hostname "$(cat /lab/hostname)"

chmod 700 /root /root/.ssh
cat /lab/authorized_keys > /root/.ssh/authorized_keys 2>/dev/null
chmod 600 /root/.ssh/authorized_keys

if grep -qw lab.nossh /proc/cmdline; then
    # Failure injection ("boot"): the VM runs but never answers SSH.
    log "ssh disabled by lab.nossh"
else
    set --
    for k in /lab/hostkeys/dropbear_*_host_key; do
        [ -f "$k" ] && set -- "$@" -r "$k"
    done
    if [ "$#" -eq 0 ]; then
        # No supplied keys: fresh ones every boot, like a newly provisioned
        # cloud image.  (`dropbear -R` generates them lazily; inetd mode below
        # would then regenerate per connection, so generate them up front.)
        for t in ed25519 ecdsa rsa; do
            k=/etc/dropbear/dropbear_${t}_host_key
            dropbearkey -t "$t" -f "$k" >/dev/null 2>&1 && set -- "$@" -r "$k"
        done
    fi
    # One dropbear per connection (inetd mode) behind busybox nc.  A daemon
    # dropbear drops a 6th concurrent pre-auth connection from one address
    # (MAX_UNAUTH_PER_IP), and behind QEMU's user-mode NAT every client is
    # 10.0.2.2, so one ssh-keyscan (a connection per key type) could hang.
    # busybox nc's listen backlog is its count of -l flags: use 32 of them,
    # or SYNs beyond 2 pending are dropped and retried seconds later.
    backlog=$(printf 'l%.0s' $(seq 32))
    # dropbear's inetd mode logs only to syslog: send that to the console log.
    syslogd -O /dev/console
    log "serving ssh: dropbear -i -s $*"
    nc "-$backlog" -p 22 -e dropbear -i -s "$@" &
fi

# The done signal: eject the seed CD-ROM once SSH listens (right away when SSH
# is off by failure mode "ssh": the guest came up, its sshd did not); failure
# mode "boot" (lab.noeject) never gives it, so `downburst create --wait` times out.
# (busybox nc listens on an IPv6 socket that takes IPv4 too: /proc/net/tcp6.)
ssh_settled() {
    grep -qw lab.nossh /proc/cmdline ||
        awk '$2 ~ /:0016$/ && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp /proc/net/tcp6
}
if grep -qw lab.noeject /proc/cmdline; then
    log "not ejecting the seed CD-ROM (lab.noeject)"
else
    i=0
    while ! { [ -b /dev/sr0 ] && ssh_settled; } && [ "$i" -lt 200 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if eject /dev/sr0; then log "ejected the seed CD-ROM"; else log "eject /dev/sr0 failed"; fi
fi
log "ready"
while :; do sleep 3600; done
