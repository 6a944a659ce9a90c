#!/usr/bin/env bash
# The doors into a node, checked with the tools that will open them:
#
# - the .deb builds (packaging/build-deb.sh) and holds what an image needs,
#   with the right modes; its binary runs and its man page renders cleanly;
# - systemd accepts the units as packaged (`systemd-analyze verify`, with
#   ExecStart pointed at the packaged binary in a temporary copy), and the
#   watcher's sandbox does not get weaker unnoticed (`systemd-analyze
#   security --offline --threshold`);
# - every cloud-init/*.yaml is valid cloud-config (`cloud-init schema`), and
#   the agent config it writes is one driftless accepts.
#
# Needs the Debian packages systemd, cloud-init (with python3-yaml),
# dpkg-dev, man-db, groff-base and openssh-client, plus the build's own
# (pkg-config, libssl-dev); packaging/build-deb.sh installs cargo-deb.
# The last line is "N passed, M failed"; the exit status is 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

# The exposure `systemd-analyze security` may give driftless-watch.service
# (0 = fully locked down, 10 = no sandbox; it is 2.1 now: without
# RestrictSUIDSGID=, which breaks openat2(), see the unit). Lower it when
# the sandbox grows.
WATCH_EXPOSURE_MAX=2.1

passed=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() {
  failed=$((failed + 1))
  echo "FAIL $1"
  [ -z "${2:-}" ] || printf '%s\n' "$2" | head -n 40 | sed 's/^/     /'
}
# check NAME COMMAND...: passes when COMMAND exits 0 and prints nothing on
# stderr (systemd-analyze reports some problems only there).
check() {
  local name=$1 out err
  shift
  if out=$("$@" 2>"$tmp/stderr"); then
    err=$(cat "$tmp/stderr")
    if [ -z "$err" ]; then pass "$name"; else fail "$name" "$err"; fi
  else
    fail "$name" "$(cat "$tmp/stderr")
$out"
  fi
}

for tool in systemd-analyze cloud-init dpkg-deb man groff ssh-keygen /usr/bin/python3; do
  command -v "$tool" >/dev/null || fail "tool $tool is installed"
done

# --- the package -----------------------------------------------------------
echo "== building the .deb (packaging/build-deb.sh)"
deb=""
if deb=$(packaging/build-deb.sh 2>"$tmp/build.log"); then
  pass "packaging/build-deb.sh builds $(basename "$deb")"
else
  fail "packaging/build-deb.sh builds the .deb" "$(tail -n 30 "$tmp/build.log")"
  deb=""
fi

root="$tmp/root"
bin="$root/usr/bin/driftless"
if [ -n "$deb" ]; then
  dpkg-deb -c "$deb" >"$tmp/contents"
  # path, then the mode dpkg-deb -c shows for it
  expected=(
    "./usr/bin/driftless -rwxr-xr-x"
    "./usr/share/man/man1/driftless.1.gz -rw-r--r--"
    "./lib/systemd/system/driftless-apply.service -rw-r--r--"
    "./lib/systemd/system/driftless-watch.service -rw-r--r--"
    "./lib/systemd/system/driftless-failed.service -rw-r--r--"
    "./lib/systemd/system/driftless-secrets.service -rw-r--r--"
    "./usr/lib/tmpfiles.d/driftless.conf -rw-r--r--"
    "./etc/driftless/ drwxr-xr-x"
    "./etc/driftless/README -rw-r--r--"
    "./usr/share/doc/driftless/copyright -rw-r--r--"
    "./usr/share/doc/driftless/README.md -rw-r--r--"
    "./usr/share/doc/driftless/baking.md -rw-r--r--"
    "./usr/share/doc/driftless/examples/agent.yaml -rw-r--r--"
    "./usr/share/doc/driftless/examples/cloud-init/user-data.yaml -rw-r--r--"
  )
  for entry in "${expected[@]}"; do
    path=${entry% *}
    mode=${entry##* }
    if awk -v p="$path" -v m="$mode" '$6 == p && $1 == m { found = 1 } END { exit !found }' "$tmp/contents"; then
      pass "the .deb holds $path ($mode)"
    else
      fail "the .deb holds $path ($mode)" "$(grep -F -- "$path" "$tmp/contents" || echo "(absent)")"
    fi
  done
  if awk '$6 !~ /^\.\// || ($2 != "root/root" && $2 != "0/0") { bad = 1 } END { exit bad }' "$tmp/contents"; then
    pass "every file in the .deb is root's, beneath ."
  else
    fail "every file in the .deb is root's, beneath ." \
      "$(awk '$6 !~ /^\.\// || ($2 != "root/root" && $2 != "0/0")' "$tmp/contents")"
  fi

  dpkg-deb -e "$deb" "$tmp/control"
  if [ -x "$tmp/control/postinst" ] && grep -q 'install -d -m 0700 -o root -g root /var/lib/driftless' "$tmp/control/postinst" &&
    ! grep -Eq 'systemctl[^|]* (enable|start)' "$tmp/control/postinst"; then
    pass "the postinst makes /var/lib/driftless 0700 and neither enables nor starts a unit"
  else
    fail "the postinst makes /var/lib/driftless 0700 and neither enables nor starts a unit" \
      "$(cat "$tmp/control/postinst" 2>/dev/null || echo "(no postinst)")"
  fi
  depends=$(dpkg-deb -f "$deb" Depends)
  if [[ $depends == *libc6* && $depends == *libssl* ]]; then
    pass "Depends names the shared libraries ($depends)"
  else
    fail "Depends names the shared libraries" "Depends: $depends"
  fi

  dpkg-deb -x "$deb" "$root"
  for unit in systemd/*.service; do
    check "the packaged $(basename "$unit") is systemd/$(basename "$unit")" \
      cmp "$unit" "$root/lib/systemd/system/$(basename "$unit")"
  done
  check "the packaged binary runs (driftless --version)" "$bin" --version
  # groff's warnings (-ww) go to stderr; check() fails on any.
  check "the man page renders without warnings" \
    sh -c "zcat '$root/usr/share/man/man1/driftless.1.gz' | groff -man -ww -z -Tutf8"
  for sub in apply plan check status fetch verify watch gate restore; do
    if zcat "$root/usr/share/man/man1/driftless.1.gz" | grep -q "^\.SS \"driftless $sub\""; then
      pass "the man page documents driftless $sub"
    else
      fail "the man page documents driftless $sub"
    fi
  done
fi

# --- systemd units ----------------------------------------------------------
echo "== systemd units"
if [ -x "$bin" ]; then
  units="$tmp/units"
  mkdir -p "$units"
  for unit in systemd/*.service; do
    sed "s|/usr/bin/driftless|$bin|g" "$unit" >"$units/$(basename "$unit")"
  done
  # MANPATH: Documentation=man:driftless(1) must name the packaged page.
  check "systemd-analyze verify systemd/*.service" \
    env MANPATH="$root/usr/share/man" systemd-analyze verify "$units"/*.service
  # --threshold counts tenths: 2.0 is 20.
  threshold=$(awk -v x="$WATCH_EXPOSURE_MAX" 'BEGIN { printf "%d", x * 10 + 0.5 }')
  if out=$(systemd-analyze security --offline=yes --threshold="$threshold" \
    "$units/driftless-watch.service" 2>&1); then
    pass "driftless-watch.service: $(printf '%s\n' "$out" | grep -o 'Overall exposure level.*' | tail -n 1)"
  else
    fail "driftless-watch.service exposure is at most $WATCH_EXPOSURE_MAX" "$(printf '%s\n' "$out" | tail -n 5)"
  fi
else
  fail "systemd units: no packaged binary to verify them with"
fi

# --- cloud-init -------------------------------------------------------------
echo "== cloud-init user-data"
ssh-keygen -q -t ed25519 -N "" -C release@example.com -f "$tmp/release_key"
for file in cloud-init/*.yaml; do
  check "cloud-init schema --config-file $file" cloud-init schema --config-file "$file"

  # The agent config it writes, with the source made unreachable and the
  # fetch's patience cut to a second (a missing repository is retried until
  # fetch.deadline): driftless must get past the config and trust files
  # (exit 3) and fail at the fetch (exit 4).
  node="$tmp/node-$(basename "$file" .yaml)"
  mkdir -p "$node/etc/driftless"
  if ! /usr/bin/python3 - "$file" "$node" <<'PY'; then
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
node = sys.argv[2]
found = False
for f in doc.get("write_files", []):
    if f["path"] == "/etc/driftless/agent.yaml":
        config = yaml.safe_load(f["content"])
        config["source"]["url"] = "file:///nonexistent/releases.git"
        config.setdefault("fetch", {})["deadline"] = "1s"
        open(node + "/agent.yaml", "w").write(yaml.safe_dump(config))
        found = True
    elif f["path"].startswith("/etc/driftless/"):
        open(node + f["path"], "w").write(f.get("content", ""))
sys.exit(0 if found else 1)
PY
    fail "$file writes /etc/driftless/agent.yaml"
    continue
  fi
  if [ ! -x "$bin" ]; then
    fail "$file: no packaged binary to read its agent config with"
    continue
  fi
  echo "release@example.com $(cat "$tmp/release_key.pub")" >"$node/etc/driftless/allowed_signers"
  "$bin" fetch --root "$node" --config "$node/agent.yaml" >"$tmp/out" 2>&1
  code=$?
  if [ "$code" = 4 ]; then
    pass "driftless accepts the agent config $file writes"
  else
    fail "driftless accepts the agent config $file writes (exit $code, expected 4)" "$(cat "$tmp/out")"
  fi
done

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
