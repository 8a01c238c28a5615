#!/usr/bin/env bash
# Fuzz the core's input parsers with cargo-fuzz (libFuzzer): each target of fuzz/ for SECONDS (default 60), then
# print the executions each reached. Not part of CI or `npm test`; see docs/fuzzing.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 600 receiver config
#
# Environment:
#   FUZZ_SANITIZER   none (default) | address   — the core has no unsafe code; ASan mostly costs speed
#   FUZZ_TOOLCHAIN   rustup toolchain (default: stable). Sanitizers need nightly flags: on a non-nightly
#                    toolchain this script sets RUSTC_BOOTSTRAP=1 for them.
# Needs `cargo install cargo-fuzz` and a C++ compiler (libfuzzer-sys builds libFuzzer).
# Exits non-zero when a target crashed; the input is in fuzz/artifacts/<target>/, the log in fuzz/logs/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

seconds="${1:-60}"
shift || true
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2; }
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(event_function event_webhook config signature receiver)
sanitizer="${FUZZ_SANITIZER:-none}"
toolchain="${FUZZ_TOOLCHAIN:-stable}"

command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 2; }
if [[ "$sanitizer" != none ]] && ! rustc "+$toolchain" --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1   # -Zsanitizer on a stable compiler (docs/fuzzing.md)
fi

# Build first, so the time given is spent fuzzing.
build_log=$(cargo "+$toolchain" fuzz build -s "$sanitizer" 2>&1) || { echo "$build_log" >&2; exit 2; }
mkdir -p logs
printf '%-16s %8s %14s %10s %7s %7s  %s\n' target seconds execs 'execs/s' cov corpus result
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  log="logs/$t.log"
  result=ok
  cargo "+$toolchain" fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
    -dict="dict/$t.dict" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || result=CRASH
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(find "corpus/$t" -type f | wc -l)
  if [[ $result == CRASH ]]; then
    failed=1
    result="CRASH: $(grep -o 'artifacts/[^ ]*' "$log" | head -1) (log: fuzz/$log)"
  fi
  printf '%-16s %8s %14s %10s %7s %7s  %s\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$corpus" "$result"
done
exit $failed
