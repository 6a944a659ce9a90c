#!/usr/bin/env bash
# Makes a seed corpus in DIR/<target>/ (default fuzz/corpus) with the real
# tools: ssh-keygen makes keys and `-Y sign -n git` signatures, git makes a
# signed tag and a signed commit. Needs git and ssh-keygen (openssh-client).
#
#   fuzz/seed.sh               # fuzz/corpus, for your own `cargo fuzz run`
#   fuzz/seed.sh fuzz/seeds    # remake the committed seeds of fuzz/smoke.sh
#
# The keys are new at every run, so the seeds differ from run to run; the
# ones fuzz/smoke.sh starts from are committed (fuzz/seeds) to stay fixed.
set -euo pipefail

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
corpus=${1:-$fuzz_dir/corpus}
mkdir -p "$corpus"
corpus=$(cd "$corpus" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$corpus/armor_sshsig" "$corpus/allowed_signers" "$corpus/git_object" "$corpus/pack"

message=$work/message
printf 'driftless fuzz seed\n' > "$message"

# One key of each type ssh-keygen makes here without hardware.
keys=(ed25519:ed25519 ecdsa256:"ecdsa -b 256" ecdsa384:"ecdsa -b 384" rsa3072:"rsa -b 3072")
pubs=()
for entry in "${keys[@]}"; do
    name=${entry%%:*}
    # shellcheck disable=SC2086 # the type carries its -b option
    ssh-keygen -q -t ${entry#*:} -N '' -C "$name@fuzz" -f "$work/$name"
    pubs+=("$work/$name.pub")

    # armor_sshsig: `ARMOR NUL MESSAGE`, and the raw SSHSIG blob.
    ssh-keygen -q -Y sign -n git -f "$work/$name" "$message"
    { cat "$message.sig"; printf '\0'; cat "$message"; } > "$corpus/armor_sshsig/$name-armored"
    sed '1d;$d' "$message.sig" | base64 -d > "$corpus/armor_sshsig/$name-blob"
    rm "$message.sig"
done
# A signature in another namespace.
ssh-keygen -q -Y sign -n file -f "$work/ed25519" "$message"
{ cat "$message.sig"; printf '\0'; cat "$message"; } > "$corpus/armor_sshsig/ed25519-file-namespace"
rm "$message.sig"

# allowed_signers: every documented form, and a revoked-keys list.
key() { cut -d' ' -f1,2 "$1"; }
{
    echo "# release signers"
    echo
    echo "alice@example.com $(key "${pubs[0]}") alice's key"
    echo "\"bob@example.com,carol@*\" namespaces=\"git,file\",valid-after=\"20240101\",valid-before=\"20300101Z\" $(key "${pubs[1]}")"
    echo "*@example.com cert-authority $(key "${pubs[2]}")"
    echo "dave@example.com valid-after=\"202401021304\",valid-before=\"20240102130405UTC\" $(key "${pubs[3]}")"
    echo "erin@example.com namespaces=\"*,!file\" $(key "${pubs[0]}")"
} > "$corpus/allowed_signers/documented-forms"
{
    echo "# revoked"
    key "${pubs[1]}"
    echo "$(key "${pubs[3]}") old laptop"
} > "$corpus/allowed_signers/revoked-keys"

# git_object: a signed tag and a signed commit, as `git cat-file` prints them.
repo=$work/repo
export HOME=$work GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_DATE="2026-01-02T03:04:05Z" GIT_COMMITTER_DATE="2026-01-02T03:04:05Z"
git init -q "$repo"
git -C "$repo" config user.name "Fuzz Seed"
git -C "$repo" config user.email "seed@example.com"
git -C "$repo" config gpg.format ssh
git -C "$repo" config user.signingKey "$work/ed25519"
git -C "$repo" commit -q --allow-empty -m "unsigned commit"
git -C "$repo" commit -q --allow-empty -S -m "signed commit"
git -C "$repo" tag -s v1.0.0 -m "release 1.0.0"
git -C "$repo" tag -a unsigned -m "unsigned tag"
git -C "$repo" cat-file tag v1.0.0 > "$corpus/git_object/signed-tag"
git -C "$repo" cat-file tag unsigned > "$corpus/git_object/unsigned-tag"
git -C "$repo" cat-file commit HEAD > "$corpus/git_object/signed-commit"
git -C "$repo" cat-file commit HEAD~ > "$corpus/git_object/unsigned-commit"

# pack: small packs made by git, with offset deltas, with ref deltas, and
# the shallow pack of one tag as a first boot receives it.
mkdir -p "$corpus/pack"
for n in 1 2 3; do
    { for i in $(seq 200); do echo "line $i of a file git will deltify"; done; echo "variant $n"; } > "$repo/f$n.txt"
done
git -C "$repo" add -A
git -C "$repo" commit -q -m "near copies"
git -C "$repo" tag -a deltas -m "deltas"
echo refs/tags/deltas | git -C "$repo" pack-objects -q --stdout --revs --delta-base-offset > "$corpus/pack/ofs-deltas"
echo refs/tags/deltas | git -C "$repo" pack-objects -q --stdout --revs > "$corpus/pack/ref-deltas"
echo refs/tags/v1.0.0 | git -C "$repo" pack-objects -q --stdout --revs --delta-base-offset > "$corpus/pack/signed-tag"

# delta: PIECE, BASE_LEN (u16 LE), BASE, DELTA. A copy, a copy and an
# insert, and a delta git made (between two of the near copies above).
mkdir -p "$corpus/delta"
printf '\004\012\0000123456789\012\004\221\002\004' > "$corpus/delta/copy"
printf '\000\012\0000123456789\012\007\221\002\004\003xyz' > "$corpus/delta/copy-insert"
base=$(git -C "$repo" rev-parse HEAD:f1.txt)
target=$(git -C "$repo" rev-parse HEAD:f2.txt)
if command -v python3 > /dev/null; then
    python3 - "$repo" "$base" "$target" "$corpus/delta/git-made" <<'PY'
import subprocess, sys, zlib
repo, base, target, out = sys.argv[1:]
# git's own delta of f2 against f1, read back from a pack of the two.
pack = subprocess.run(["git", "-C", repo, "pack-objects", "-q", "--stdout"],
                      input=f"{base}\n{target}\n".encode(), capture_output=True, check=True).stdout
base_bytes = subprocess.run(["git", "-C", repo, "cat-file", "blob", base],
                            capture_output=True, check=True).stdout
pos, found = 12, None
for _ in range(int.from_bytes(pack[8:12], "big")):
    b = pack[pos]; kind = (b >> 4) & 7; pos += 1
    while b & 0x80:
        b = pack[pos]; pos += 1
    if kind == 6:
        b = pack[pos]; pos += 1
        while b & 0x80:
            b = pack[pos]; pos += 1
    elif kind == 7:
        pos += 20
    d = zlib.decompressobj()
    data = d.decompress(pack[pos:])
    pos = len(pack) - len(d.unused_data)
    if kind in (6, 7):
        found = data
if found is not None:
    with open(out, "wb") as f:
        f.write(bytes([15]) + len(base_bytes).to_bytes(2, "little") + base_bytes + found)
PY
fi

echo "seeds written to $corpus"
