#!/usr/bin/env bash
# A bounded fuzz run of every fuzz target: the routine check that no parser
# of untrusted input panics on what a short libFuzzer run finds.
#
#   fuzz/smoke.sh                 # every target, 60 s each
#   fuzz/smoke.sh pack git_object # some of them
#   FUZZ_SECONDS=10 fuzz/smoke.sh
#
# Targets are the [[bin]] entries of fuzz/Cargo.toml, so a new target is
# run as soon as it is declared there. Each starts from a copy of its fixed
# seed corpus, fuzz/seeds/TARGET/ (committed; an empty corpus when a target
# has none yet), so the seeds are never changed by a run, with a fixed
# libFuzzer seed, its dictionary fuzz/dict/TARGET.dict when there is one,
# and the extra libFuzzer flags in fuzz/options/TARGET when that file
# exists. A crash, a panic, a timeout (-timeout) or running out of memory
# (-rss_limit_mb) fails the run; libFuzzer saves the input under
# fuzz/artifacts/TARGET/ (see fuzz/README.md to replay it).
#
# Environment:
#   FUZZ_SECONDS   seconds each target runs (default 60)
#   FUZZ_SEED      libFuzzer's -seed (default 1)
#   FUZZ_TIMEOUT   seconds one input may take (default 10)
#   FUZZ_RSS_MB    memory limit of a run in MiB (default 2048)
#   FUZZ_KEEP=1    keep the working corpora (printed at the end)
#   CARGO_TARGET_DIR  where the instrumented build goes (cargo-fuzz's
#                  default: fuzz/target)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo-fuzz passes
# nightly-only flags to rustc; on a stable toolchain this script sets
# RUSTC_BOOTSTRAP=1 to allow them. The last lines are a table, one row a
# target (runs, executions per second, coverage, corpus, peak memory,
# result), then "N passed, M failed"; the exit status is 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-60}
SEED=${FUZZ_SEED:-1}
TIMEOUT=${FUZZ_TIMEOUT:-10}
RSS_MB=${FUZZ_RSS_MB:-2048}

die() { echo "error: fuzz/smoke.sh: $*" >&2; exit 1; }

cargo fuzz --version >/dev/null 2>&1 ||
  die "cargo-fuzz is not installed (cargo install cargo-fuzz --locked)"
case $SECONDS_EACH in '' | *[!0-9]*) die "FUZZ_SECONDS must be a number of seconds" ;; esac
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi

# Every [[bin]] name of fuzz/Cargo.toml, in file order.
all_targets=$(awk '
  /^\[\[bin\]\]/ { in_bin = 1; next }
  /^\[/ { in_bin = 0 }
  in_bin && /^name *=/ { gsub(/^name *= *"|" *$/, ""); print }
' fuzz/Cargo.toml)
[ -n "$all_targets" ] || die "no [[bin]] targets in fuzz/Cargo.toml"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets <<<"$all_targets"
fi
for t in "${targets[@]}"; do
  grep -qx -- "$t" <<<"$all_targets" || die "unknown target $t (fuzz/Cargo.toml has: $(tr '\n' ' ' <<<"$all_targets"))"
done

echo "== building ${#targets[@]} targets (cargo fuzz build)"
for t in "${targets[@]}"; do
  if ! out=$(cargo fuzz build --fuzz-dir fuzz "$t" 2>&1); then
    printf '%s\n' "$out" | tail -n 30 >&2
    die "cargo fuzz build $t failed"
  fi
done

work=$(mktemp -d /tmp/driftless-fuzz.XXXXXX)
if [ "${FUZZ_KEEP:-0}" != 1 ]; then
  trap 'rm -rf "$work"' EXIT
fi

passed=0
failed=0
rows=()
for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  mkdir -p "$corpus"
  seeds=0
  if [ -d "fuzz/seeds/$t" ]; then
    cp -r "fuzz/seeds/$t/." "$corpus/"
    seeds=$(find "$corpus" -type f | wc -l)
  fi
  flags=(-max_total_time="$SECONDS_EACH" -seed="$SEED" -timeout="$TIMEOUT"
    -rss_limit_mb="$RSS_MB" -print_final_stats=1)
  [ -f "fuzz/dict/$t.dict" ] && flags+=(-dict="fuzz/dict/$t.dict")
  if [ -f "fuzz/options/$t" ]; then
    # One flag a word, comments after '#'.
    read -r -a extra <<<"$(sed 's/#.*//' "fuzz/options/$t" | tr '\n' ' ')"
    flags+=("${extra[@]}")
  fi
  echo "== $t: ${SECONDS_EACH} s from $seeds seeds (${flags[*]})"
  log="$work/$t.log"
  cargo fuzz run --fuzz-dir fuzz "$t" "$corpus" -- "${flags[@]}" >"$log" 2>&1
  status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
  if [ $status -eq 0 ]; then
    result=ok
    passed=$((passed + 1))
  else
    result="FAILED (exit $status)"
    failed=$((failed + 1))
    echo "FAIL $t: cargo fuzz run exited $status; the end of its log:"
    grep -Ev '^#[0-9]+' "$log" | tail -n 40 | sed 's/^/     /'
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    [ -z "$artifact" ] || echo "     input saved: $artifact (cargo fuzz fmt $t $artifact)"
  fi
  rows+=("$(printf '%-18s %12s %9s %7s %7s %12s %7s  %s' "$t" "${runs:-?}" "${rate:-?}" \
    "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}" "$result")")
done

echo "== summary: ${SECONDS_EACH} s a target, libFuzzer seed $SEED"
printf '%-18s %12s %9s %7s %7s %12s %7s  %s\n' target runs exec/s cov ft corpus rss_mb result
printf '%s\n' "${rows[@]}"
[ "${FUZZ_KEEP:-0}" != 1 ] || echo "kept $work"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
