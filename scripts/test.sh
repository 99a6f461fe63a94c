#!/usr/bin/env bash
# Builds and runs dynabert's tests on a fresh Debian 12 machine (installs what it needs first).
#   scripts/test.sh          development build + ctest (unit tests, PyTorch parity, tools, consumer)
#   scripts/test.sh --all    also the AddressSanitizer + UndefinedBehaviorSanitizer build of the tests,
#                            the ThreadSanitizer build of the threading tests, and each libFuzzer
#                            target for 45 s (docs/hardening.md; scripts/fuzz.sh runs them longer)
set -euo pipefail
cd "$(dirname "$0")/.."
all=0
[[ "${1:-}" == "--all" ]] && all=1

scripts/install-deps.sh --python
# the real bert-base-uncased vocabulary and GPT-2's BPE files for the tokenizers' hand-checked ids
scripts/fetch-data.sh vocab sentiment spam brown bpe || echo "test: data not fetched; the tests on real files will be skipped"
jobs=$(nproc)

cmake --preset dev -DDYNABERT_BUILD_BENCHMARKS=OFF
cmake --build --preset dev -j "$jobs"
ctest --preset dev -j "$jobs"

if ((all)); then
  cmake --preset asan
  cmake --build --preset asan -j "$jobs" --target test_core test_kernels test_model test_blocks test_train test_text
  ctest --preset asan -R '^test_' -j "$jobs"

  # ThreadSanitizer: Session concurrency and thread-count tests, against oneTBB rebuilt with TSan
  scripts/tsan.sh

  # libFuzzer: every target for about 45 s, one per core (clang and its runtime installed if missing)
  FUZZ_JOBS=$jobs scripts/fuzz.sh 45
fi
