#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (preset `fuzz`: clang++ with
# -fsanitize=fuzzer,address,undefined) and runs each for a while (docs/hardening.md).
#   scripts/fuzz.sh [seconds-per-target] [target...]    default: 600 s, every target
# Targets: safetensors config index tokenizer bpe mail datasets inputs trainer_state.
# Environment:
#   FUZZ_JOBS=N   run N targets side by side (default 1; CI uses one per core)
#   FUZZ_NICE=N   run the build and the fuzzers under `nice -n N` (default 0)
# Each run starts from the committed seeds (tests/fuzz/corpus/<target>, read only) and the corpus
# grown by earlier runs (build/fuzz/work/<target>, kept). A crash, sanitizer report, leak, timeout
# (> 10 s for one input) or out-of-memory (> 2 GB, or one allocation > 1 GB) stops that target,
# writes the input to build/fuzz/findings/<target>/ and makes this script exit with status 1.
# Logs: build/fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
all_targets=(safetensors config index tokenizer bpe mail datasets inputs trainer_state)
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "fuzz: unknown target '$t' (${all_targets[*]})" >&2; exit 2; }
done
jobs=${FUZZ_JOBS:-1}
nice_cmd=(nice -n "${FUZZ_NICE:-0}")

# clang++ and its libFuzzer runtime (Debian 12: clang-14 and libclang-rt-14-dev)
runtime_present() {
  command -v clang++ >/dev/null 2>&1 &&
    [[ -f "$(clang++ -print-resource-dir 2>/dev/null)/lib/linux/libclang_rt.fuzzer-$(uname -m).a" ]]
}
if ! runtime_present; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  pkgs=(clang)
  if command -v clang++ >/dev/null 2>&1; then
    major=$(clang++ -dumpversion | cut -d. -f1)
  else
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends clang
    major=$(clang++ -dumpversion | cut -d. -f1)
  fi
  pkgs+=("libclang-rt-${major}-dev")
  echo "fuzz: installing ${pkgs[*]} (clang's libFuzzer runtime)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" ||
    { $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"; }
  runtime_present || { echo "fuzz: no libclang_rt.fuzzer after installing ${pkgs[*]}" >&2; exit 2; }
fi

"${nice_cmd[@]}" cmake --preset fuzz >/dev/null
build_targets=()
for t in "${targets[@]}"; do build_targets+=("fuzz_$t"); done
"${nice_cmd[@]}" cmake --build build/fuzz -j "$jobs" --target "${build_targets[@]}"

bin=build/fuzz/tests/fuzz
mkdir -p build/fuzz/logs
declare -A dict=([safetensors]=json [config]=json [index]=json [datasets]=json [inputs]=json [trainer_state]=json
                 [mail]=mail [tokenizer]=text [bpe]=bpe)
run_one() {
  local t=$1 work=build/fuzz/work/$1 findings=build/fuzz/findings/$1 log=build/fuzz/logs/$1.log
  mkdir -p "$work" "$findings"
  local opts=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=200000
              -print_final_stats=1 -artifact_prefix="$findings/" -dict="tests/fuzz/${dict[$t]}.dict")
  local rc=0
  "${nice_cmd[@]}" "$bin/fuzz_$t" "${opts[@]}" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  local runs cov
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  if ((rc == 0)); then
    printf 'fuzz %-14s ok     %4ss  %9s runs  %s  corpus %s\n' "$t" "$seconds" "${runs:-?}" "${cov:-}" "$(ls "$work" | wc -l)"
  else
    printf 'fuzz %-14s FAILED (exit %d): see %s and %s/\n' "$t" "$rc" "$log" "$findings"
    grep -m1 -E '^(==[0-9]+==ERROR|SUMMARY|.*invariant failed|.*runtime error|==[0-9]+== ERROR: libFuzzer)' "$log" || true
  fi
  return "$rc"
}

echo "fuzz: ${#targets[@]} target(s), ${seconds} s each, ${jobs} at a time"
# an interrupted script (Ctrl-C, a CI timeout) takes its running fuzzers with it
trap 'pkill -f "$bin/fuzz_" 2>/dev/null; kill $(jobs -p) 2>/dev/null; exit 130' INT TERM
failed=0
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if ((running >= jobs)); then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while ((running > 0)); do
  wait -n || failed=1
  running=$((running - 1))
done
if ((failed)); then
  echo "fuzz: FAILED (findings in build/fuzz/findings/; reproduce with build/fuzz/tests/fuzz/fuzz_<target> <file>)" >&2
  exit 1
fi
echo "fuzz: no finding"
