#!/usr/bin/env bash
# The whole life of a node in a real boot: a Debian bookworm virtual machine
# under QEMU (TCG: this machine has no usable KVM) with real systemd and
# real cloud-init, the freshly built .deb, and a release repository served
# from this host. Three scenarios, each judged from the serial console and
# from the disk read back after the guest powered off:
#
#   1. applied:  user-data -> driftless-apply -> health -> locked (a write to
#                a managed file fails inside the guest) -> driftless-watch
#                running; the release's service, mount, socket, timer and
#                path unit run; times from power-on to `applied` and
#                `locked` are printed. Booted again, systemd starts the
#                mount, socket, timer and path unit itself, early, before
#                driftless-apply runs: their gate is open.
#   2. replaced: the test moves the channel with `driftless channel` (the
#                host's copy from the .deb): a refresh, a hold, a promote
#                while held, a rollback and a release leave the guest up,
#                each accepted by its watcher; the promote that follows
#                makes it power itself off within the poll interval
#                (action poweroff). Its first boot waits for a clock that
#                never synchronizes (no NTP here), then goes on.
#   3. refused:  a release signed by a stranger -> apply fails closed: the
#                release's service never starts, status says why.
#   4. gated:    a release whose health check fails -> apply stops the
#                units it started, records the failure and (failure.policy
#                replace) powers the node off; booted again, systemd skips
#                the release's service (its gate, `driftless gate`, is shut)
#                and its mount, socket, timer and path unit (their
#                condition, /var/lib/driftless/gate-open, does not hold).
#   5. secret:   a release with an age-encrypted secret on a tmpfs (/run),
#                the node's identity baked into the image -> applied, the
#                service finds its secret; booted again, driftless-secrets
#                puts the secret back before the service starts; the
#                plaintext is nowhere on the guest's disk.
#
#   bash tests/vm/run.sh                 # all five
#   bash tests/vm/run.sh applied refused # some of them
#
# What it needs: root; qemu-system-x86 (with qemu-utils/bookworm, see
# .ci/run), debootstrap, e2fsprogs (debugfs, mke2fs), dosfstools + mtools
# (the CIDATA seed), git (its daemon serves the releases), ssh-keygen, age,
# systemd's journalctl (reads the guest's journal), cloud-init (checks the
# user-data's schema), python3, and what packaging/build-deb.sh needs.
#
# Environment:
#   DRIFTLESS_VM_CACHE    where the base image is cached, keyed by a hash of
#                         tests/vm/image.sh (default /var/cache/driftless-vm);
#                         a cold build takes 1.5 to 3 min, then it is reused
#   DRIFTLESS_VM_DEB      a .deb to test instead of building one
#   DRIFTLESS_VM_KEEP=1   keep the work directory (disks, console logs)
#   DRIFTLESS_VM_TIMEOUT  seconds a boot may take to reach each checkpoint
#                         (default 300)
#
# The guest reaches nothing but the release repository: QEMU's user network
# with restrict=on, and a guestfwd of 10.0.2.100:9418 to `git daemon
# --inetd` run by QEMU for each connection. Nothing listens on the host. The
# per-run disk is a copy of the cached image into which the .deb's files are
# written with debugfs (no mount), so a change to driftless never rebuilds
# the image. The last line is "N passed, M failed"; the exit status is 1 on
# any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
repo_root=$(pwd)

TIMEOUT=${DRIFTLESS_VM_TIMEOUT:-300}
# The watcher's poll interval in scenario 2, and what it may take on top
# under TCG: fetch and verify the new release, then shut down.
POLL=5
POWEROFF_MARGIN=60
# How long a first boot from the channel waits for a synchronized clock:
# the guest has no NTP server to reach, so it waits this long, then goes on.
CLOCK_WAIT=10
PRINCIPAL=release@example.com

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() {
  failed=$((failed + 1))
  echo "FAIL $1"
  [ -z "${2:-}" ] || printf '%s\n' "$2" | tail -n 40 | sed 's/^/     /'
}
die() { echo "error: vm: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, debugfs on the image)"
for tool in qemu-system-x86_64 debugfs mke2fs mkfs.vfat mcopy git ssh-keygen age age-keygen journalctl python3 dpkg-deb cloud-init; do
  command -v "$tool" >/dev/null || die "$tool is not installed (see the header of $0)"
done
git daemon --help >/dev/null 2>&1 || [ -x "$(git --exec-path)/git-daemon" ] || die "git daemon is not available"

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(applied replaced refused gated secret)
for s in "${scenarios[@]}"; do
  case $s in applied | replaced | refused | gated | secret) ;; *) die "unknown scenario $s (applied, replaced, refused, gated, secret)" ;; esac
done

work=$(mktemp -d /tmp/driftless-vm.XXXXXX)
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null
    sleep 1
    kill -9 "$qemu_pid" 2>/dev/null
  fi
  if [ "${DRIFTLESS_VM_KEEP:-0}" = 1 ]; then
    echo "kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run_started=$(date +%s)

# --- the image and the package ----------------------------------------------
image_started=$(date +%s)
image=$(bash tests/vm/image.sh) || die "the base image could not be built"
# One line naming a directory, or the build printed something it should not.
[ -d "$image" ] && [ -f "$image/rootfs.raw" ] ||
  die "tests/vm/image.sh printed '$image', not the image's directory"
image_seconds=$(($(date +%s) - image_started))
echo "== image $image ($image_seconds s)"

if [ -n "${DRIFTLESS_VM_DEB:-}" ]; then
  deb=$DRIFTLESS_VM_DEB
else
  echo "== building the .deb (packaging/build-deb.sh)"
  deb=$(packaging/build-deb.sh 2>"$work/build-deb.log") || {
    tail -n 30 "$work/build-deb.log" >&2
    die "packaging/build-deb.sh failed"
  }
fi
[ -f "$deb" ] || die "no .deb at $deb"
echo "== package $(basename "$deb")"
mkdir -p "$work/deb"
dpkg-deb -x "$deb" "$work/deb"

# --- fixtures: keys, a release repository, a signed channel -----------------
echo "== fixtures"
fixture_git() { git -c user.name=Release -c user.email=$PRINCIPAL -c gpg.format=ssh "$@"; }
ssh-keygen -q -t ed25519 -N "" -C $PRINCIPAL -f "$work/release_key"
ssh-keygen -q -t ed25519 -N "" -C stranger@example.com -f "$work/stranger_key"
echo "$PRINCIPAL $(cat "$work/release_key.pub")" >"$work/allowed_signers"

src="$work/release"
mkdir -p "$src/files" "$src/units"
git init -q -b main "$src"
# The release: a config file, a service that reads it, a health check that
# asks systemd whether the service runs.
cat >"$src/driftless.yaml" <<'EOF'
directories:
  - { path: /etc/app, mode: "0755" }
files:
  - { path: /etc/app/app.conf, source: files/app.conf, mode: "0644" }
units:
  - { name: app.service, source: units/app.service }
  - { name: srv-data.mount, source: units/srv-data.mount }
  - { name: hello.socket, source: units/hello.socket }
  - { name: hello.service, source: units/oneshot.service, enabled: false, started: false }
  - { name: tick.timer, source: units/tick.timer }
  - { name: tick.service, source: units/oneshot.service, enabled: false, started: false }
  - { name: flag.path, source: units/flag.path }
  - { name: flag.service, source: units/oneshot.service, enabled: false, started: false }
health:
  - exec: [/usr/bin/systemctl, is-active, --quiet, app.service]
    timeout: 30s
EOF
printf 'greeting = hello from release v1\n' >"$src/files/app.conf"
cat >"$src/units/app.service" <<'EOF'
[Unit]
Description=The release's app

[Service]
ExecStart=/bin/sh -c 'echo "app: started with $$(cat /etc/app/app.conf)"; exec sleep infinity'

[Install]
WantedBy=multi-user.target
EOF
# Units that are not services, each started early at boot by systemd
# itself (local-fs, sockets, timers, paths), long before driftless-apply:
# only their gate's condition keeps them inert on a failed node. Their
# descriptions name them in the journal.
cat >"$src/units/srv-data.mount" <<'EOF'
[Unit]
Description=driftless-vm data mount

[Mount]
What=tmpfs
Where=/srv/data
Type=tmpfs

[Install]
WantedBy=local-fs.target
EOF
cat >"$src/units/hello.socket" <<'EOF'
[Unit]
Description=driftless-vm hello socket

[Socket]
ListenStream=127.0.0.1:7070

[Install]
WantedBy=sockets.target
EOF
cat >"$src/units/tick.timer" <<'EOF'
[Unit]
Description=driftless-vm tick timer

[Timer]
OnBootSec=1h

[Install]
WantedBy=timers.target
EOF
cat >"$src/units/flag.path" <<'EOF'
[Unit]
Description=driftless-vm flag path

[Path]
PathExists=/run/driftless-vm-flag

[Install]
WantedBy=paths.target
EOF
printf '[Service]\nType=oneshot\nExecStart=/bin/true\n' >"$src/units/oneshot.service"
fixture_git -C "$src" add -A
fixture_git -C "$src" commit -q -m "release v1"
fixture_git -C "$src" -c user.signingkey="$work/release_key" tag -s -m "v1" v1
fixture_git -C "$src" -c user.signingkey="$work/stranger_key" tag -s -m "v1, not ours" v1-stranger
printf 'greeting = hello from release v2\n' >"$src/files/app.conf"
fixture_git -C "$src" commit -q -am "release v2"
fixture_git -C "$src" -c user.signingkey="$work/release_key" tag -s -m "v2" v2
# A release whose health check never passes: the service starts, but the
# node is not what it should be.
sed -i 's|exec: \[/usr/bin/systemctl, is-active, --quiet, app.service\]|exec: [/bin/false]|; s|timeout: 30s|timeout: 5s|' \
  "$src/driftless.yaml"
fixture_git -C "$src" commit -q -am "release v3, unhealthy"
fixture_git -C "$src" -c user.signingkey="$work/release_key" tag -s -m "v3" v3-unhealthy
# A release with a secret on a tmpfs, encrypted with the age tool to the
# node's identity (baked into scenario 5's image). The service says whether
# it found its secret, never what it is.
age-keygen -o "$work/node.age" 2>/dev/null
node_recipient=$(age-keygen -y "$work/node.age")
vm_secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$src/secrets"
printf '%s' "$vm_secret" | age -r "$node_recipient" -o "$src/secrets/token.age"
# v1's spec and service, with the secret.
git -C "$src" show v1:driftless.yaml |
  sed 's|^  - { path: /etc/app, mode: "0755" }$|&\n  - { path: /run/app, mode: "0750" }|
       s|^  - { path: /etc/app/app.conf, .*$|&\n  - { path: /run/app/token, secret: secrets/token.age, tmpfs: true }|' \
    >"$src/driftless.yaml"
# shellcheck disable=SC2016 # $$ is systemd's escape for the shell's $.
git -C "$src" show v1:units/app.service |
  sed 's|^ExecStart=.*|ExecStart=/bin/sh -c '"'"'if [ "$$(wc -c </run/app/token)" = 32 ]; then echo "app: secret in place"; else echo "app: secret missing"; fi; exec sleep infinity'"'"'|' \
    >"$src/units/app.service"
grep -q 'secret: secrets/token.age' "$src/driftless.yaml" && grep -q 'secret in place' "$src/units/app.service" ||
  die "cannot make the v4 fixture"
fixture_git -C "$src" add -A
fixture_git -C "$src" commit -q -m "release v4, a secret"
fixture_git -C "$src" -c user.signingkey="$work/release_key" tag -s -m "v4" v4-secret
# The channel: its own branch, written by `driftless channel` (the host's
# copy of the packaged binary) as an operator would, signed by the release
# key, for the fleet the guests' config names.
channel() {
  GIT_COMMITTER_NAME=Release GIT_COMMITTER_EMAIL=$PRINCIPAL GIT_AUTHOR_NAME=Release GIT_AUTHOR_EMAIL=$PRINCIPAL \
    "$work/deb/usr/bin/driftless" channel "$@" --repo "$src" --allowed-signers "$work/allowed_signers" \
    --signing-key "$work/release_key"
}
channel init v1 --fleet vm >/dev/null || die "driftless channel init failed"
# Scenario 5's node watches a channel that names its own release, so that
# it stays up (scenario 2 moves the first one).
channel --branch channel-secret init v4-secret --fleet vm >/dev/null ||
  die "driftless channel init of channel-secret failed"
mkdir -p "$work/srv"
git clone -q --bare "$src" "$work/srv/release.git"
fixture_git -C "$src" push -q "$work/srv/release.git" channel channel-secret v1 v1-stranger v2 v3-unhealthy v4-secret 2>/dev/null ||
  die "cannot push the fixtures"
git -c gpg.ssh.allowedSignersFile="$work/allowed_signers" -C "$work/srv/release.git" verify-tag v1 >/dev/null 2>&1 ||
  die "git itself does not verify the fixture tag v1"

# --- one boot -----------------------------------------------------------------
# The probe runs inside the guest from cloud-init's runcmd: it waits for
# driftless-apply to finish, tries to change a managed file, reports on the
# console (lines starting PROBE), and powers off when asked.
probe_script() {
  cat <<'EOF'
#!/bin/sh
# PROBE: the test's eyes inside the guest. $1: poweroff or stay.
say() { echo "PROBE $*"; }
state=unknown
for _ in $(seq 1 240); do
  state=$(systemctl show -P ActiveState driftless-apply.service)
  case $state in active | failed) break ;; esac
  sleep 1
done
say "apply-unit $state"
say "apply-result $(systemctl show -P Result driftless-apply.service)"
say "app $(systemctl is-active app.service)"
# shellcheck disable=SC2046 # one word a unit
say units $(systemctl is-active srv-data.mount hello.socket tick.timer flag.path)
if [ -e /etc/app/app.conf ]; then
  if err=$(sh -c 'echo tampered >>/etc/app/app.conf' 2>&1); then
    say "write-managed allowed"
  else
    say "write-managed refused: $err"
  fi
fi
if [ "$state" = active ]; then
  for _ in $(seq 1 120); do
    systemctl is-active --quiet driftless-watch.service && break
    sleep 1
  done
fi
say "watch $(systemctl is-active driftless-watch.service)"
driftless gate >/dev/null 2>&1
say "gate $?"
driftless check >/dev/null 2>&1
say "check $?"
if [ -e /run/app/token ]; then say "token present $(stat -f -c %T /run/app/token)"; else say "token absent"; fi
driftless status 2>&1 | sed 's/^/PROBE status: /'
say "done"
[ "$1" = poweroff ] && systemctl poweroff --no-block
exit 0
EOF
}

# user_data TAG_OR_CHANNEL PROBE_MODE [FAILURE_POLICY]: the shape of
# cloud-init/user-data.yaml (the agent config by write_files), plus the
# trust and the probe.
user_data() {
  local release=$1 mode=$2 failure=${3:-mark-failed}
  echo "#cloud-config"
  echo "write_files:"
  echo "  - path: /etc/driftless/agent.yaml"
  echo "    owner: root:root"
  echo "    permissions: \"0644\""
  echo "    content: |"
  echo "      source:"
  echo "        url: git://10.0.2.100/release.git"
  echo "      trust:"
  echo "        allowed_signers: /etc/driftless/allowed_signers"
  echo "      release: $release"
  echo "      fetch: {connect_timeout: 10s, io_timeout: 30s, deadline: 2m}"
  echo "      channel: {poll_interval: ${POLL}s, fleet: vm${channel_ref:+, ref: $channel_ref}}"
  echo "      clock: {sync: wait, sync_timeout: ${CLOCK_WAIT}s}"
  echo "      replace: {action: poweroff}"
  echo "      failure: {policy: $failure}"
  [ -z "${extra_config:-}" ] || echo "      $extra_config"
  echo "  - path: /etc/driftless/allowed_signers"
  echo "    owner: root:root"
  echo "    permissions: \"0644\""
  echo "    content: |"
  echo "      $(cat "$work/allowed_signers")"
  echo "  - path: /usr/local/sbin/driftless-vm-probe"
  echo "    owner: root:root"
  echo "    permissions: \"0755\""
  echo "    content: |"
  probe_script | sed 's/^/      /'
  echo "runcmd:"
  echo "  - [/usr/local/sbin/driftless-vm-probe, $mode]"
}

# debugfs_install DISK: writes the .deb's files into the ext4 image, as dpkg
# would (modes and owners from the package), then what the image bakery
# does (docs/baking.md): enable both units, and what the postinst does:
# /var/lib/driftless 0700. The image is merged-/usr: /lib/... goes to
# /usr/lib/....
debugfs_install() {
  local disk=$1 cmds="$work/debugfs.cmds"
  : >"$cmds"
  (
    cd "$work/deb" || exit 1
    find . -mindepth 1 | sort | while read -r path; do
      local dest=${path#.}
      case $dest in /lib | /lib/*) dest=/usr$dest ;; esac
      local mode
      mode=$(stat -c '%a' "$path")
      if [ -L "$path" ]; then
        echo "symlink $dest $(readlink "$path")"
      elif [ -d "$path" ]; then
        echo "mkdir $dest"
        echo "sif $dest mode 040$(printf '%03o' "0$mode")"
      else
        # debugfs writes into its current directory, under the name given.
        echo "cd ${dest%/*}"
        echo "write $path ${dest##*/}"
        echo "sif $dest mode 0100$(printf '%03o' "0$mode")"
      fi
      echo "sif $dest uid 0"
      echo "sif $dest gid 0"
    done
  ) >>"$cmds"
  cat >>"$cmds" <<'EOF'
symlink /etc/systemd/system/multi-user.target.wants/driftless-apply.service /lib/systemd/system/driftless-apply.service
symlink /etc/systemd/system/multi-user.target.wants/driftless-watch.service /lib/systemd/system/driftless-watch.service
symlink /etc/systemd/system/multi-user.target.wants/driftless-secrets.service /lib/systemd/system/driftless-secrets.service
mkdir /var/lib/driftless
sif /var/lib/driftless mode 040700
EOF
  (cd "$work/deb" && debugfs -w -f "$cmds" "$disk") >"$work/debugfs.log" 2>&1
  # debugfs goes on after an error; its complaints are the lines that are
  # neither an echo of a command nor news of an inode (a directory the
  # image already has is fine).
  local complaints
  complaints=$(grep -Ev '^(debugfs [0-9.]+ \(|debugfs: |Allocated inode: )' "$work/debugfs.log" |
    grep -Ev '(ext2fs_mkdir|mkdir): Ext2 directory already exists')
  if [ -n "$complaints" ]; then
    fail "the .deb's files are written into the image" "$complaints"
    return 1
  fi
  local mode
  mode=$(debugfs -R "stat /usr/bin/driftless" "$disk" 2>/dev/null | grep -o 'Mode: *[0-7]*' | grep -o '[0-7]*$')
  [ "$mode" = 0755 ] || { fail "the image holds /usr/bin/driftless 0755" "mode: $mode"; return 1; }
}

# install_identity DISK FILE: bakes the node's age identity into the image
# as /etc/driftless/age-identity, root's, 0600 (docs/secrets.md: a file
# baked per role).
install_identity() {
  local disk=$1 file=$2 cmds="$work/identity.cmds"
  printf 'cd /etc/driftless\nwrite %s age-identity\nsif /etc/driftless/age-identity mode 0100600\nsif /etc/driftless/age-identity uid 0\nsif /etc/driftless/age-identity gid 0\n' \
    "$file" >"$cmds"
  debugfs -w -f "$cmds" "$disk" >"$work/identity.log" 2>&1
  local mode
  mode=$(debugfs -R "stat /etc/driftless/age-identity" "$disk" 2>/dev/null | grep -o 'Mode: *[0-7]*' | grep -o '[0-7]*$')
  [ "$mode" = 0600 ] || { fail "the node's identity is baked into the image, 0600" "mode '$mode'; $(cat "$work/identity.log")"; return 1; }
}

# guest_file DISK PATH: prints a file of the powered-off guest's disk.
guest_file() { debugfs -R "cat $2" "$1" 2>/dev/null; }

# boot NAME RELEASE PROBE_MODE [FAILURE_POLICY]: prepares the disk ($disk)
# and the seed, starts QEMU in the background (qemu_pid), console in
# $work/NAME.console.
boot() {
  local name=$1 release=$2 mode=$3 failure=${4:-mark-failed}
  local seed="$work/$name-seed.img" seeddir="$work/$name-seed"
  # The scenario's disk, read back by its checks.
  disk="$work/$name.raw"
  cp --sparse=always "$image/rootfs.raw" "$disk"
  debugfs_install "$disk" || return 1
  [ -z "${identity_file:-}" ] || install_identity "$disk" "$identity_file" || return 1
  mkdir -p "$seeddir"
  printf 'instance-id: driftless-vm-%s-%s\nlocal-hostname: driftless-%s\n' \
    "$name" "$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')" "$name" >"$seeddir/meta-data"
  user_data "$release" "$mode" "$failure" >"$seeddir/user-data"
  if ! out=$(cloud-init schema --config-file "$seeddir/user-data" 2>&1); then
    fail "the $name user-data is valid cloud-config" "$out"
    return 1
  fi
  mkfs.vfat -n CIDATA -C "$seed" 2048 >/dev/null
  mcopy -i "$seed" "$seeddir/meta-data" "$seeddir/user-data" ::
  console="$work/$name.console"
  : >"$console"
  power_on_again "$name"
}

# power_on_again NAME: starts QEMU on NAME's disk and seed as they are,
# appending to the console; its monitor listens on $work/NAME.monitor.
power_on_again() {
  local name=$1 disk="$work/$1.raw" seed="$work/$1-seed.img"
  # QEMU runs the git daemon, once per guest connection, on this host's
  # side of the forward; the guest sees it as git://10.0.2.100/.
  local daemon="git daemon --inetd --export-all --base-path=$work/srv --log-destination=none $work/srv"
  console="$work/$name.console"
  qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 1536 \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.show_status=1" \
    -drive "file=$disk,format=raw,if=virtio" \
    -drive "file=$seed,format=raw,if=virtio" \
    -netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:9418-cmd:$daemon" \
    -device virtio-net-pci,netdev=n0 \
    -chardev "file,id=serial0,path=$console,append=on" -serial chardev:serial0 \
    -display none -monitor "unix:$work/$name.monitor,server=on,wait=off" -no-reboot \
    >>"$work/$name.qemu.log" 2>&1 &
  qemu_pid=$!
}

# wait_console PATTERN SECONDS: waits until the console shows PATTERN (an
# extended regex); 1 on timeout or when QEMU exits first.
wait_console() {
  local pattern=$1 deadline=$(($(date +%s) + $2))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    grep -Eq -- "$pattern" "$console" 2>/dev/null && return 0
    kill -0 "$qemu_pid" 2>/dev/null || { grep -Eq -- "$pattern" "$console"; return; }
    sleep 1
  done
  return 1
}

# press_power_button NAME: ACPI power button (QEMU's system_powerdown);
# logind powers the guest off cleanly.
press_power_button() {
  python3 - "$work/$1.monitor" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(5)
time.sleep(0.5)
s.sendall(b"system_powerdown\n")
time.sleep(0.5)
s.close()
PY
}

# wait_poweroff SECONDS: waits for QEMU to exit; kills it on timeout (1).
wait_poweroff() {
  local deadline=$(($(date +%s) + $1))
  while kill -0 "$qemu_pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      kill "$qemu_pid" 2>/dev/null
      sleep 1
      kill -9 "$qemu_pid" 2>/dev/null
      wait "$qemu_pid" 2>/dev/null
      qemu_pid=""
      return 1
    fi
    sleep 0.5
  done
  wait "$qemu_pid" 2>/dev/null
  qemu_pid=""
}

# probe KEY: the value the in-guest probe reported for KEY (console lines
# come through journald: "[  12.3] cloud-init[394]: PROBE KEY VALUE").
probe() { sed -n "s/.*PROBE $1 //p" "$console" | tr -d '\r' | head -n 1; }

# console_has NAME PATTERN: a check on the console.
console_has() {
  if grep -Eq -- "$2" "$console"; then pass "$1"; else fail "$1" "$(tail -n 30 "$console")"; fi
}

# expect NAME ACTUAL WANTED
expect() {
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got \"$2\", expected \"$3\""; fi
}

# journal_line DISK PATTERN: the first journal line of the guest (read
# from its disk, monotonic time since the kernel started) matching PATTERN.
journal_line() {
  local disk=$1 dir="$work/journal-$(basename "$1" .raw)"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    debugfs -R "rdump /var/log/journal $dir" "$disk" >/dev/null 2>&1
  fi
  # Not a pipe into grep -m1: under pipefail, journalctl's SIGPIPE would
  # turn a match into a failure.
  local lines
  lines=$(journalctl --file="$dir/journal/*/*.journal" -o short-monotonic --no-pager 2>/dev/null)
  grep -E -m1 -- "$2" <<<"$lines"
}
seconds_of() { sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p' | head -n 1; }

# boot_until_probe NAME RELEASE PROBE_MODE: boots and waits for the probe's
# report; 1 (with the console's tail, QEMU killed) when it does not come.
boot_until_probe() {
  boot "$@" || return 1
  if ! wait_console 'PROBE done' "$TIMEOUT"; then
    fail "the guest boots and the probe reports within ${TIMEOUT}s" "$(tail -n 40 "$console")"
    wait_poweroff 1
    return 1
  fi
}

# expect_poweroff: the probe asked the guest to power off.
expect_poweroff() {
  wait_poweroff 120 || fail "the guest powers off when the probe asks" "$(tail -n 20 "$console")"
}

# json_check NAME JSON EXPRESSION: passes when the Python EXPRESSION holds
# for the parsed JSON, named x.
json_check() {
  if python3 -c 'import json, sys; x = json.loads(sys.argv[1]); assert eval(sys.argv[2])' "$2" "$3" 2>/dev/null; then
    pass "$1"
  else
    fail "$1" "${2:-(nothing)}"
  fi
}

# --- scenario 1: applied, locked, watched -------------------------------------
scenario_applied() {
  echo "== scenario 1: boot -> apply -> health -> locked -> driftless-watch running"
  boot_until_probe applied "{tag: v1}" poweroff || return
  expect_poweroff
  console_has "apply logs the verified release on the console" \
    "release v1 \(commit [0-9a-f]{40}\) verified: signed by $PRINCIPAL"
  console_has "apply reports the release locked on the console" "release v1 locked"
  console_has "apply reports the release applied on the console" "release v1 applied"
  expect "driftless-apply.service succeeded" "$(probe apply-unit) $(probe apply-result)" "active success"
  expect "the release's service runs (started by apply, health-checked)" "$(probe app)" active
  expect "the release's mount, socket, timer and path unit run (started by apply)" \
    "$(probe units)" "active active active active"
  case $(probe write-managed) in
    refused:*"Operation not permitted"*) pass "a write to a managed file fails inside the guest ($(probe write-managed | cut -c10-))" ;;
    *) fail "a write to a managed file fails inside the guest" "$(probe write-managed)" ;;
  esac
  expect "driftless-watch.service is running" "$(probe watch)" active
  expect "the gate is open on the applied node" "$(probe gate)" 0
  # The disk, read back after power-off.
  json_check "state.json on the disk records v1 applied" \
    "$(guest_file "$disk" /var/lib/driftless/state.json)" \
    'x["status"]["state"] == "applied" and x["release"]["tag"] == "v1"'
  local flags
  flags=$(debugfs -R "stat /etc/app/app.conf" "$disk" 2>/dev/null | sed -n 's/.*Flags: \(0x[0-9a-f]*\).*/\1/p')
  if [ -n "$flags" ] && (((flags & 0x10) != 0)); then
    pass "/etc/app/app.conf is immutable on the disk (flags $flags)"
  else
    fail "/etc/app/app.conf is immutable on the disk" "flags: $flags"
  fi
  expect "/etc/app/app.conf on the disk is the release's, untouched" \
    "$(guest_file "$disk" /etc/app/app.conf)" "greeting = hello from release v1"
  expect "the gate's drop-in is on the disk" \
    "$(guest_file "$disk" /etc/systemd/system/app.service.d/50-driftless-gate.conf | grep '^ExecCondition=')" \
    "ExecCondition=+/usr/bin/driftless gate"
  expect "the gate's file is on the disk, a regular file: the units may start at every boot" \
    "$(debugfs -R "stat /var/lib/driftless/gate-open" "$disk" 2>/dev/null | grep -o 'Type: regular')" \
    "Type: regular"
  if journal_line "$disk" "app: started with greeting = hello from release v1" >/dev/null; then
    pass "the guest's journal shows the app started with the release's config"
  else
    fail "the guest's journal shows the app started with the release's config" \
      "$(journal_line "$disk" "app\.service" || echo "(no line)")"
  fi
  # Times in seconds since the kernel started (direct kernel boot: that is
  # power-on), from the console's copy of the journal (stamped per line; the
  # journal on the disk stamps lines that arrive together alike).
  local start_at applied_at locked_at
  start_at=$(journal_line "$disk" "Starting driftless-apply.service" | seconds_of)
  locked_at=$(sed -n 's/^\[ *\([0-9.]*\)\] driftless\[[0-9]*\]: .*release v1 locked.*/\1/p' "$console" | head -n 1)
  applied_at=$(sed -n 's/^\[ *\([0-9.]*\)\] driftless\[[0-9]*\]: .*release v1 applied.*/\1/p' "$console" | head -n 1)
  if [ -n "$start_at" ] && [ -n "$applied_at" ] && [ -n "$locked_at" ]; then
    pass "the console and the journal on the disk have the apply's lines"
    echo "     power-on -> driftless-apply starts: ${start_at} s"
    echo "     power-on -> locked:                 ${locked_at} s"
    echo "     power-on -> applied:                ${applied_at} s"
    timing="power-on -> apply starts ${start_at} s, -> locked ${locked_at} s, -> applied ${applied_at} s"
  else
    fail "the console and the journal on the disk have the apply's lines" \
      "start '$start_at' locked '$locked_at' applied '$applied_at'"
  fi
  applied_again
}

# The applied node booted again: systemd starts the release's early units
# (mount, socket, timer, path) itself, before driftless-apply runs, since
# their gate's file says the release passed; apply then only checks.
applied_again() {
  echo "     booting the applied node again"
  power_on_again applied
  if ! wait_console "was already applied; checked the node" "$TIMEOUT"; then
    fail "booted again, apply checks the applied node within ${TIMEOUT}s" "$(tail -n 40 "$console")"
    wait_poweroff 1
    return
  fi
  pass "booted again, apply checks the applied node"
  sleep 3
  press_power_button applied
  if ! wait_poweroff 120; then
    fail "the guest powers off on the power button" "$(tail -n 20 "$console")"
    return
  fi
  rm -rf "$work/journal-applied"
  journal_line "$disk" "." >/dev/null
  local second apply_at
  second=$(journalctl --file="$work/journal-applied/journal/*/*.journal" -b 0 -o short-monotonic --no-pager 2>/dev/null)
  apply_at=$(grep -m1 "Starting driftless-apply.service" <<<"$second" | seconds_of)
  local what verb at
  for what in "Mounted:data mount" "Listening on:hello socket" "Started:tick timer" "Started:flag path"; do
    verb=${what%%:*}
    at=$(grep -m1 -E "$verb .*driftless-vm ${what#*:}" <<<"$second" | seconds_of)
    if [ -n "$at" ] && [ -n "$apply_at" ] && awk -v a="$at" -v b="$apply_at" 'BEGIN { exit !(a < b) }'; then
      pass "booted again, systemd started the ${what#*:} itself (${at} s), before apply (${apply_at} s)"
    else
      fail "booted again, systemd started the ${what#*:} itself before apply" \
        "at '$at', apply at '$apply_at'; $(grep -E "driftless-vm|gate-open" <<<"$second" | head -n 10)"
    fi
  done
  if grep -q "unmet condition check (ConditionPathExists=/var/lib/driftless/gate-open)" <<<"$second"; then
    fail "booted again, no unit of the applied release was skipped" \
      "$(grep "gate-open" <<<"$second")"
  else
    pass "booted again, no unit of the applied release was skipped"
  fi
}

# --- scenario 2: the channel moves, the node asks to be replaced -------------
scenario_replaced() {
  echo "== scenario 2: the channel moves -> the guest powers itself off"
  boot_until_probe replaced "{channel: channel}" stay || return
  expect "the node applied the release the channel names" "$(probe apply-result)" success
  expect "driftless-watch.service is running" "$(probe watch)" active
  if [ "$(probe watch)" != active ]; then
    wait_poweroff 1
    return
  fi
  console_has "the first boot waited for a synchronized clock, then went on" \
    "waiting up to ${CLOCK_WAIT}s for the clock|synchronized after"
  # A quiet poll or two first: the node must not go on its own. Then the
  # operator's moves that keep it: each is pushed, and the guest stays up.
  local step
  for step in "" refresh hold "promote v2" "rollback v1" release; do
    if [ -n "$step" ]; then
      # shellcheck disable=SC2086
      channel $step >/dev/null || { fail "driftless channel $step" ""; wait_poweroff 1; return; }
      fixture_git -C "$src" push -q "$work/srv/release.git" channel
    fi
    sleep $((POLL * 2))
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
      fail "the guest stays up after ${step:-its first polls}" "$(tail -n 20 "$console")"
      return
    fi
    pass "the guest stays up after ${step:-its first polls} (the channel names its release, or holds)"
  done
  channel promote v2 >/dev/null || { fail "driftless channel promote v2" ""; wait_poweroff 1; return; }
  fixture_git -C "$src" push -q "$work/srv/release.git" channel
  local pushed
  pushed=$(date +%s.%N)
  if wait_poweroff $((POLL + POWEROFF_MARGIN)); then
    local took
    took=$(awk -v a="$pushed" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    pass "the guest powers itself off after the channel moved (${took} s after the push; poll ${POLL} s)"
    replaced_timing="${took} s from push to power-off"
  else
    fail "the guest powers itself off within $((POLL + POWEROFF_MARGIN)) s of the push" "$(tail -n 30 "$console")"
  fi
  json_check "watch.json on the disk records the replacement request for v2" \
    "$(guest_file "$disk" /var/lib/driftless/watch.json)" \
    'x["replacement"]["status"] == "done" and "v2" in json.dumps(x["replacement"])'
  json_check "the watcher accepted every move: sequence 7, promoted by a channel signer" \
    "$(guest_file "$disk" /var/lib/driftless/watch.json)" \
    'x["channel"]["file"]["sequence"] == 7 and x["channel"]["role"] == "channel" and x["freshness"]["fresh"]'
  local seq
  for seq in 2 3 4 5 6 7; do
    if journal_line "$disk" "channel (moved|refreshed) to [0-9a-f]{40} \(sequence $seq," >/dev/null; then
      pass "the guest's journal shows the watcher accepting sequence $seq"
    else
      fail "the guest's journal shows the watcher accepting sequence $seq" \
        "$(journal_line "$disk" "channel (moved|refreshed)" || echo "(no line)")"
    fi
  done
  json_check "the node still holds v1: it was never upgraded in place" \
    "$(guest_file "$disk" /var/lib/driftless/state.json)" \
    'x["status"]["state"] == "applied" and x["release"]["tag"] == "v1"'
}

# --- scenario 4: the gate across a reboot of a failed node --------------------
scenario_gated() {
  echo "== scenario 4: a failed health check -> service stopped; booted again, the gate keeps it stopped"
  boot gated "{tag: v3-unhealthy}" stay replace || return
  # failure.policy replace: apply asks to be replaced, action poweroff.
  if ! wait_poweroff "$TIMEOUT"; then
    fail "the failed node powers itself off (failure.policy: replace) within ${TIMEOUT}s" "$(tail -n 40 "$console")"
    return
  fi
  pass "the failed node powers itself off (failure.policy: replace)"
  console_has "apply started the release's service" "Started .*app.service"
  console_has "apply stops the service it started when the health check fails" \
    "stopping the release's units: app.service"
  console_has "apply reports the failed health check" "error: .*health check.*/bin/false"
  json_check "state.json on the disk records the failure at health" \
    "$(guest_file "$disk" /var/lib/driftless/state.json)" \
    'x["status"]["state"] == "failed" and x["status"]["stage"] == "health"'
  expect "the service is enabled: a reboot would start it without its gate" \
    "$(debugfs -R "stat /etc/systemd/system/multi-user.target.wants/app.service" "$disk" 2>/dev/null | grep -o 'Type: symlink')" \
    "Type: symlink"
  # Boot the same node again: systemd starts the enabled service at boot,
  # long before apply runs; the gate must turn it away.
  echo "     booting the failed node again"
  local first_boot
  first_boot=$(grep -c "stopping the release's units" "$console")
  power_on_again gated
  # Apply retries the failed node and fails again (it asked to be replaced
  # once already, so it does not power off); then the power button.
  local deadline=$(($(date +%s) + TIMEOUT))
  while [ "$(grep -c "stopping the release's units" "$console")" -le "$first_boot" ]; do
    if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "$qemu_pid" 2>/dev/null; then
      fail "booted again, apply retries and fails again within ${TIMEOUT}s" "$(tail -n 40 "$console")"
      wait_poweroff 1
      return
    fi
    sleep 1
  done
  pass "booted again, apply retries the failed node and fails again"
  sleep 3
  press_power_button gated
  if ! wait_poweroff 120; then
    fail "the guest powers off on the power button" "$(tail -n 20 "$console")"
    return
  fi
  local boots second
  journal_line "$disk" "." >/dev/null
  boots=$(journalctl --file="$work/journal-gated/journal/*/*.journal" --list-boots --no-pager 2>/dev/null |
    grep -cE '[0-9a-f]{32}')
  expect "the guest's journal holds both boots" "$boots" 2
  second=$(journalctl --file="$work/journal-gated/journal/*/*.journal" -b 0 -o short-monotonic --no-pager 2>/dev/null)
  if grep -q "gate closed, the release's services stay stopped: release v3-unhealthy failed at health" <<<"$second"; then
    pass "booted again, systemd asked the gate and it said no (failed at health)"
  else
    fail "booted again, systemd asked the gate and it said no" "$(grep -E 'app.service|gate' <<<"$second")"
  fi
  # The service's first start of the second boot is systemd's, at boot,
  # before driftless-apply starts: skipped, not run.
  local skipped_at apply_at
  skipped_at=$(grep -m1 "gate closed" <<<"$second" | seconds_of)
  apply_at=$(grep -m1 "Starting driftless-apply.service" <<<"$second" | seconds_of)
  if [ -n "$skipped_at" ] && [ -n "$apply_at" ] &&
    awk -v a="$skipped_at" -v b="$apply_at" 'BEGIN { exit !(a < b) }'; then
    pass "the boot's own start of the service was turned away (${skipped_at} s) before apply ran (${apply_at} s)"
  else
    fail "the boot's own start of the service was turned away before apply ran" "gate closed at '$skipped_at', apply at '$apply_at'"
  fi
  # The mount, socket, timer and path unit: systemd checked their gate's
  # condition at boot, before apply ran, and skipped them.
  local what skip
  for what in "data mount" "hello socket" "tick timer" "flag path"; do
    skip=$(grep -m1 -E "driftless-vm $what.*skipped because of an unmet condition check \(ConditionPathExists=/var/lib/driftless/gate-open\)" <<<"$second" | seconds_of)
    if [ -n "$skip" ] && [ -n "$apply_at" ] && awk -v a="$skip" -v b="$apply_at" 'BEGIN { exit !(a < b) }'; then
      pass "booted again, systemd skipped the $what at boot (${skip} s), before apply ran"
    else
      fail "booted again, systemd skipped the $what at boot, before apply ran" \
        "skipped at '$skip', apply at '$apply_at'; $(grep -E "driftless-vm|gate-open" <<<"$second" | head -n 10)"
    fi
  done
  local early="" line at
  while IFS= read -r line; do
    at=$(seconds_of <<<"$line")
    if [ -n "$at" ] && awk -v a="$at" -v b="${apply_at:-0}" 'BEGIN { exit !(a < b) }'; then
      early+="$line"$'\n'
    fi
  done < <(grep -E "(Mounted|Listening on|Started) .*driftless-vm" <<<"$second")
  if [ -n "$apply_at" ] && [ -z "$early" ]; then
    pass "booted again, none of them ran before apply retried"
  else
    fail "booted again, none of them ran before apply retried" "$early"
  fi
  # (Apply then retries the failed node, starting the service in its own
  # window, and fails again.)
  local ran_at
  ran_at=$(grep -m1 "app: started with" <<<"$second" | seconds_of)
  if [ -n "$apply_at" ] && { [ -z "$ran_at" ] || awk -v a="$ran_at" -v b="$apply_at" 'BEGIN { exit !(a > b) }'; }; then
    pass "the service did not run before apply retried"
  else
    fail "the service did not run before apply retried" "ran at '$ran_at', apply at '$apply_at'"
  fi
}

# --- scenario 3: a stranger's release -----------------------------------------
scenario_refused() {
  echo "== scenario 3: a release signed by a stranger -> apply fails closed"
  boot_until_probe refused "{tag: v1-stranger}" poweroff || return
  expect_poweroff
  expect "driftless-apply.service failed" "$(probe apply-unit)" failed
  expect "the release's service did not start" "$(probe app)" inactive
  expect "driftless-watch.service did not start" "$(probe watch)" inactive
  expect "the gate is closed on the failed node" "$(probe gate)" 1
  console_has "the console says why (apply's error line)" \
    "error: .*v1-stranger.*not in allowed_signers"
  console_has "driftless status says why" "PROBE status: status +FAILED at verify: .*not in allowed_signers"
  console_has "driftless-failed.service reported the node on the console" "driftless\[[0-9]+\]: status +FAILED at verify"
  expect "nothing of the release was written" \
    "$(guest_file "$disk" /etc/systemd/system/app.service)$(guest_file "$disk" /etc/app/app.conf)" ""

  json_check "the disk records the failure at verify" \
    "$(guest_file "$disk" /var/lib/driftless/failure.json)" \
    'x["stage"] == "verify" and "not in allowed_signers" in x["reason"]'
}

# --- scenario 5: a secret on a tmpfs, put back at the next boot ---------------
scenario_secret() {
  echo "== scenario 5: a secret on a tmpfs -> applied; booted again, put back before its service starts"
  extra_config="secrets: {identity_file: /etc/driftless/age-identity}"
  identity_file="$work/node.age"
  channel_ref=refs/heads/channel-secret
  boot_until_probe secret "{tag: v4-secret}" poweroff
  local booted=$?
  extra_config=""
  identity_file=""
  channel_ref=""
  [ $booted = 0 ] || return
  expect_poweroff
  expect "driftless-apply.service succeeded" "$(probe apply-unit) $(probe apply-result)" "active success"
  expect "the release's service runs" "$(probe app)" active
  expect "the secret is in place, on a tmpfs" "$(probe token)" "present tmpfs"
  expect "driftless check finds no drift on the applied node" "$(probe check)" 0
  expect "the gate is open" "$(probe gate)" 0
  # Booted again: /run is empty, and driftless-secrets (ordered before the
  # service by its drop-in) puts the secret back from its sealed copy.
  echo "     booting the node again"
  local first
  first=$(grep -c "Started .*app.service" "$console")
  power_on_again secret
  local deadline=$(($(date +%s) + TIMEOUT))
  while [ "$(grep -c "Started .*app.service" "$console")" -le "$first" ]; do
    if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "$qemu_pid" 2>/dev/null; then
      fail "booted again, the release's service starts within ${TIMEOUT}s" "$(tail -n 40 "$console")"
      wait_poweroff 1
      return
    fi
    sleep 1
  done
  pass "booted again, the release's service starts"
  wait_console "release v4-secret \(commit [0-9a-f]{40}\) was already applied" 120 ||
    fail "booted again, driftless apply checks the node" "$(tail -n 20 "$console")"
  sleep 5
  press_power_button secret
  if ! wait_poweroff 120; then
    fail "the guest powers off on the power button" "$(tail -n 20 "$console")"
    return
  fi
  local second put_back_at app_at
  journal_line "$disk" "." >/dev/null
  second=$(journalctl --file="$work/journal-secret/journal/*/*.journal" -b 0 -o short-monotonic --no-pager 2>/dev/null)
  put_back_at=$(grep -m1 "secret /run/app/token put back from its sealed copy" <<<"$second" | seconds_of)
  app_at=$(grep -m1 "app: secret " <<<"$second" | seconds_of)
  if grep -q "app: secret in place" <<<"$second" && ! grep -q "app: secret missing" <<<"$second"; then
    pass "booted again, the service found its secret"
  else
    fail "booted again, the service found its secret" "$(grep -E 'app|secret' <<<"$second" | tail -n 20)"
  fi
  if [ -n "$put_back_at" ] && [ -n "$app_at" ] &&
    awk -v a="$put_back_at" -v b="$app_at" 'BEGIN { exit !(a < b) }'; then
    pass "the secret was put back (${put_back_at} s) before the service started (${app_at} s)"
  else
    fail "the secret was put back before the service started" "put back at '$put_back_at', service at '$app_at'"
  fi
  if grep -Eq "/run/app/token: (missing|secret changed|lock removed)" <<<"$second"; then
    fail "no drift on the secret at the second boot" "$(grep -E '/run/app/token' <<<"$second")"
  else
    pass "no drift on the secret at the second boot"
  fi
  json_check "state.json on the disk keeps a keyed digest and a sealed copy of the secret, no plain digest" \
    "$(guest_file "$disk" /var/lib/driftless/state.json)" \
    '[e for e in x["manifest"] if e["path"] == "/run/app/token" and "sha256" not in e and len(e["secret"]["hmac_sha256"]) == 64 and e["secret"]["sealed"].startswith("/var/lib/driftless/sealed/")]'
  local digest
  digest=$(printf '%s' "$vm_secret" | sha256sum | cut -c1-64)
  if grep -qaF -e "$vm_secret" -e "$digest" "$disk"; then
    fail "neither the secret nor its SHA-256 is anywhere on the guest's disk" "found in $disk"
  else
    pass "neither the secret nor its SHA-256 is anywhere on the guest's disk (journal, state, cache)"
  fi
}

timing=""
replaced_timing=""
disk=""
extra_config=""
identity_file=""
channel_ref=""
for s in "${scenarios[@]}"; do
  started=$(date +%s)
  "scenario_$s"
  echo "     scenario $s took $(($(date +%s) - started)) s"
done

echo "== summary"
[ -z "$timing" ] || echo "in the guest: $timing"
[ -z "$replaced_timing" ] || echo "replacement: $replaced_timing"
echo "image: $image_seconds s (cached when ~0), whole run: $(($(date +%s) - run_started)) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
