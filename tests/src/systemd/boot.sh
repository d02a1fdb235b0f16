#!/bin/sh
# PID 1 of the namespaces `unshare --pid --fork --mount --propagation private --net --uts
# --ipc --cgroup --mount-proc` made for tests/tests/systemd_unit.rs: it installs the package
# into this mount namespace only, closes every way back to the host's file systems and
# global kernel settings, then execs systemd.
#
# usage: boot.sh PKG CONSOLE
#   PKG      the .deb unpacked by `dpkg-deb -x` (usr/, etc/); or "dpkg": nothing is laid,
#            /usr, /etc and /var get writable overlays instead (their changes in this
#            namespace's /run), so the test installs and upgrades packages with dpkg itself
#   CONSOLE  a file of the test that becomes /dev/console (systemd's own messages)
#
# Every mount below lives in this mount namespace (propagation private): the host sees none.
set -eu
PKG="$1"
CONSOLE="$2"

# A fresh /run, and in it a /dev of pseudo devices only (no /dev/kmsg, no disks), built
# while the host's /dev and the console file are in reach and writable.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir /run/dev
mount -t tmpfs -o mode=0755,nosuid tmpfs /run/dev
for d in null zero full random urandom tty; do
  touch "/run/dev/$d"
  mount --bind "/dev/$d" "/run/dev/$d"
done
touch /run/dev/console
mount --bind "$CONSOLE" /run/dev/console
mkdir /run/dev/pts /run/dev/shm /run/dev/mqueue
ln -s pts/ptmx /run/dev/ptmx
ln -s /proc/self/fd /run/dev/fd
for i in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${i%%:*}" "/run/dev/${i#*:}"; done

# The host's file systems (/ and any other, such as a separate /var) are read-only from here
# on: a per-mount flag of this namespace's mounts, not of the file systems, so nothing
# started here can write them. /proc, /sys and /dev are replaced below, /run already was.
for m in $(awk '{print $5}' /proc/self/mountinfo); do
  case "$m" in /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /run | /run/*) continue ;; esac
  mount -o remount,bind,ro "$m" || { echo "boot.sh: cannot make $m read-only" >&2; exit 1; }
done
findmnt -no OPTIONS / | grep -qE '(^|,)ro(,|$)' || { echo "boot.sh: / is still writable" >&2; exit 1; }

if [ "$PKG" = dpkg ]; then
  # For dpkg: the host's /usr, /etc and /var under overlays whose writable layer is in this
  # namespace's /run; what dpkg writes (files, its database, the conffile) goes there.
  for d in usr etc var; do
    mkdir -p "/run/fwt-rw/$d/upper" "/run/fwt-rw/$d/work"
    mount -t overlay -o "lowerdir=/$d,upperdir=/run/fwt-rw/$d/upper,workdir=/run/fwt-rw/$d/work" overlay "/$d"
  done
  # A container image's policy-rc.d (Docker's says 101: never start services) would stop
  # the package's postinst from restarting the unit, which a NAT VM has no such file to
  # prevent. Removed in this namespace's overlay only.
  rm -f /usr/sbin/policy-rc.d
else
  # The package, installed as dpkg would lay it out: its files over /usr and /etc (read-only
  # overlays), its conffile in a tmpfs on /etc/forwarder (the daemon rewrites it).
  mount -t overlay -o "lowerdir=$PKG/usr:/usr" overlay /usr
  mount -t overlay -o "lowerdir=$PKG/etc:/etc" overlay /etc
  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /etc/forwarder
  cp "$PKG/etc/forwarder/forwarder.toml" /etc/forwarder/
fi

mount --move /run/dev /dev
rmdir /run/dev
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm

# Writable places systemd and the unit need (PrivateTmp= wants /tmp and /var/tmp; journald
# and PID 1 keep state in the other two), all tmpfs.
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$d"; done
for d in /var/log/journal /var/lib/systemd; do
  if [ -d "$d" ]; then mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$d"; fi
done

# /sys of this network namespace (its interfaces only), read-only as in a container; the
# cgroup2 tree rooted at this cgroup namespace; and the bpffs the unit pins into
# (pin_path /sys/fs/bpf/forwarder, ReadWritePaths=/sys/fs/bpf).
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
mount -t bpf -o mode=0700 bpf /sys/fs/bpf

# Kernel settings: only net.* (this network namespace's own) stay writable; kernel.*, vm.*
# and fs.* are the host's.
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount --bind /proc/sys/net /proc/sys/net
mount -o remount,bind,rw /proc/sys/net
if [ -e /proc/sysrq-trigger ]; then
  mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
  mount -o remount,bind,ro /proc/sysrq-trigger
fi

# Units that would change global kernel state (binfmt_misc registrations, modules, the
# host's sysctl.d) or run the host's timers: masked for this boot (/run is ours).
mkdir -p /run/systemd/system
for u in systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
  proc-sys-fs-binfmt_misc.mount systemd-sysctl.service systemd-modules-load.service \
  timers.target; do
  ln -s /dev/null "/run/systemd/system/$u"
done

# A container to systemd (ConditionVirtualization=!container units stay off), and without
# the capabilities that reach past the namespaces: module loading, the clock, raw I/O, the
# kernel log. The unit's own (CAP_BPF CAP_NET_ADMIN CAP_PERFMON) remain.
export container=fwt-test
exec setpriv \
  --bounding-set -sys_module,-sys_time,-sys_rawio,-syslog,-wake_alarm,-sys_pacct,-mac_admin,-mac_override,-audit_control,-block_suspend \
  /lib/systemd/systemd --system --unit=basic.target
