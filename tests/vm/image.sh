#!/usr/bin/env bash
# Builds (once) the Debian bookworm base image the VM scenarios boot, and
# prints the directory that holds it:
#
#   DIR/rootfs.raw   an ext4 filesystem (no partition table), 2 GiB sparse
#   DIR/vmlinuz      the kernel and initrd of linux-image-cloud-amd64, for
#   DIR/initrd.img   QEMU's direct kernel boot (-kernel/-initrd)
#
# DIR is $DRIFTLESS_VM_CACHE (default /var/cache/driftless-vm) / a hash of
# this file: changing the recipe below builds a new image, while a change
# to driftless itself never does (run.sh writes the fresh .deb's files into
# a per-run copy). Builds run under an exclusive lock, in a temporary
# directory renamed into place when complete, so an interrupted build leaves
# nothing half-made behind. Old images are not removed: delete the cache
# directory to reclaim the space.
#
# The image is what a team would bake, minus driftless: minbase, systemd as
# init, udev, cloud-init (NoCloud only, modules trimmed to what a minimal
# image can run: Debian's default locale module fails without locales, and
# SSH host keys cost ~10 s under TCG), networkd with DHCP, a persistent
# journal (read back from the disk after power-off), and nothing listening.
#
# Needs root, debootstrap, e2fsprogs (mke2fs -d) and access to a Debian
# mirror ($DEBIAN_MIRROR, default http://deb.debian.org/debian).
set -euo pipefail
# stdout carries exactly one line, the image's directory: every command's
# own output goes to stderr (mke2fs 1.47 prints "Creating regular file …"
# on stdout, which once reached run.sh as a second line of the path).
exec 3>&1 1>&2

here=$(cd "$(dirname "$0")" && pwd)
cache=${DRIFTLESS_VM_CACHE:-/var/cache/driftless-vm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
recipe_hash=$(sha256sum "$here/image.sh" | cut -c1-16)
dir="$cache/$recipe_hash"

log() { echo "== image: $*" >&2; }
die() { echo "error: image: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "building the image needs root (debootstrap, chroot)"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 900 9 || die "another build holds $cache/.lock for more than 15 minutes"

if [ -f "$dir/rootfs.raw" ] && [ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd.img" ]; then
  log "cached: $dir"
  echo "$dir" >&3
  exit 0
fi
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
command -v mke2fs >/dev/null || die "mke2fs is not installed (apt-get install e2fsprogs)"

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
started=$(date +%s)

# python3-cffi-backend: cloud-init needs it, but debootstrap cannot resolve
# the virtual package that names it. dbus: logind answers `systemctl
# poweroff` through it. libssl3: driftless links it.
packages=systemd,systemd-sysv,udev,dbus,cloud-init,python3-cffi-backend,linux-image-cloud-amd64
packages+=,iproute2,e2fsprogs,libssl3,ca-certificates
log "debootstrap bookworm (minbase + $packages) from $mirror"
debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || {
  tail -n 20 "$work/debootstrap.log" >&2
  die "debootstrap failed (log above)"
}

log "configuring"
echo driftless-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 driftless-vm\n' >"$root/etc/hosts"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"
# Empty: systemd makes a new machine id at each first boot of a copy.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

# The guest's one interface, by DHCP from QEMU's user network.
cat >"$root/etc/systemd/network/10-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF
chroot "$root" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service >/dev/null 2>&1
# No console login, nothing listening, no timers doing work mid-test.
chroot "$root" systemctl mask getty@tty1.service serial-getty@ttyS0.service \
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
  fstrim.timer >/dev/null 2>&1
# The journal is read back from the disk after power-off.
mkdir -p "$root/var/log/journal"

cat >"$root/etc/cloud/cloud.cfg.d/90-driftless-vm.cfg" <<'EOF'
# The test VM's cloud-init: NoCloud (the CIDATA disk) only; networkd's own
# DHCP config instead of a generated one; no default user, no SSH keys.
datasource_list: [NoCloud, None]
network: {config: disabled}
users: []
disable_root: false
ssh_genkeytypes: []
ssh_deletekeys: false
cloud_init_modules:
  - seed_random
  - bootcmd
  - write_files
  - set_hostname
  - update_hostname
  - update_etc_hosts
cloud_config_modules:
  - runcmd
cloud_final_modules:
  - scripts_user
  - final_message
EOF

kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -n 1)
[ -f "$kernel" ] && [ -f "$initrd" ] || die "no kernel or initrd under $root/boot"
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"

rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
log "making the ext4 filesystem"
mke2fs -q -t ext4 -L root -d "$root" "$work/rootfs.raw" 2G
rm -rf "$root"
mv "$work" "$dir"
trap - EXIT
log "built $dir in $(($(date +%s) - started)) s"
echo "$dir" >&3
