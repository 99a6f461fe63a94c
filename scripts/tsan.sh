#!/usr/bin/env bash
# ThreadSanitizer run of the threading tests (docs/hardening.md): the Session concurrency tests
# (test_model) and the thread-count tests (test_blocks, test_kernels), built by the `tsan` preset.
#   scripts/tsan.sh [ctest arguments...]
#
# TSan must see every synchronisation, and Debian's libtbb is not instrumented: against it, TSan
# reports thousands of false races in dynabert's kernels (the fork and join of each parallel_for
# happen inside libtbb, out of its sight). So this script first builds the installed oneTBB
# version from its Debian source with -fsanitize=thread (TBB_SANITIZE=thread; apt-get source with
# a private package index under build/tsan-tbb, nothing in /etc is changed; about 30 s, once per
# version) and the tests run against that library (LD_LIBRARY_PATH, set by the test preset).
# Suppressions, if ever needed, go in tests/tsan.supp (its header says which are acceptable).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-$(nproc)}  # JOBS=1 for a polite build beside other work
root=$PWD/build/tsan-tbb
source_version=$(dpkg-query -W -f='${source:Package}=${source:Version}\n' libtbb12 2>/dev/null | head -1) ||
  { echo "tsan: libtbb12 is not installed (scripts/install-deps.sh)" >&2; exit 2; }

if [[ ! -f "$root/lib/.built-$source_version" ]]; then
  echo "tsan: building $source_version with -fsanitize=thread into $root/lib"
  rm -rf "$root/src" "$root/build" "$root/lib" "$root"/*.dsc "$root"/*.tar.*
  mkdir -p "$root/apt/lists/partial"
  # deb-src twins of the system's own Debian entries, in both formats apt reads: one-line entries
  # of a /debian archive, and deb822 .sources files signed by Debian's archive key
  : >"$root/apt/sources.list"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    sed -n '/\/debian/s/^[[:space:]]*deb[[:space:]]\+/deb-src /p' "$f" >>"$root/apt/sources.list"
  done
  rm -rf "$root/apt/sources.list.d" && mkdir -p "$root/apt/sources.list.d"
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] && grep -q 'debian-archive-keyring' "$f" || continue
    sed 's/^Types:.*/Types: deb-src/' "$f" >"$root/apt/sources.list.d/$(basename "$f")"
  done
  mkdir -p "$root/apt/cache/archives/partial"
  apt_opts=(-q -o "Dir::State::Lists=$root/apt/lists" -o "Dir::Cache=$root/apt/cache"
            -o "Dir::Etc::SourceList=$root/apt/sources.list" -o "Dir::Etc::SourceParts=$root/apt/sources.list.d")
  [[ $(id -u) -eq 0 ]] && apt_opts+=(-o APT::Sandbox::User=root)  # _apt cannot write under build/
  [[ -s "$root/apt/sources.list" || -n "$(ls -A "$root/apt/sources.list.d")" ]] ||
    { echo "tsan: no Debian archive among the system's apt sources: cannot fetch oneTBB's source" >&2; exit 2; }
  # a listed archive without source indexes (a third-party one under a /debian path) is not fatal
  apt-get "${apt_opts[@]}" update >"$root/apt-update.log" 2>&1 ||
    echo "tsan: apt-get update reported errors ($root/apt-update.log); trying the source anyway" >&2
  (cd "$root" && apt-get "${apt_opts[@]}" source --download-only "$source_version" >/dev/null) ||
    { echo "tsan: cannot download the source of $source_version (the archive may have a newer version" \
           "than the installed one: upgrade libtbb12 and libtbb-dev)" >&2; exit 2; }
  command -v dpkg-source >/dev/null || { echo "tsan: dpkg-source missing (dpkg-dev)" >&2; exit 2; }
  (cd "$root" && dpkg-source -x --no-check ./*.dsc src >/dev/null)  # hashes already checked by apt
  cmake -S "$root/src" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTBB_SANITIZE=thread \
    -DTBB_TEST=OFF -DTBB_EXAMPLES=OFF -DTBBMALLOC_BUILD=OFF -DTBB_STRICT=OFF \
    -DTBB_DISABLE_HWLOC_AUTOMATIC_SEARCH=ON >"$root/configure.log"
  cmake --build "$root/build" -j "$jobs" --target tbb >"$root/build.log"
  mkdir -p "$root/lib"
  cp -P "$root"/build/*/libtbb.so* "$root/lib/"
  touch "$root/lib/.built-$source_version"
fi

cmake --preset tsan
cmake --build --preset tsan -j "$jobs"
# the tests must resolve libtbb to the instrumented build (the preset sets LD_LIBRARY_PATH)
resolved=$(LD_LIBRARY_PATH=$root/lib ldd build/tsan/tests/test_model | awk '/libtbb\.so/ {print $3}')
[[ "$resolved" == "$root/lib/"* ]] || { echo "tsan: test_model resolves libtbb to '$resolved'" >&2; exit 2; }
# ASLR off where the system allows it: the TSan runtimes of GCC 12 and LLVM 14 cannot map their
# shadow memory under the larger mmap randomisation of recent kernels (vm.mmap_rnd_bits > 28).
no_aslr=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
  no_aslr=(setarch "$(uname -m)" -R)
else
  echo "tsan: note: setarch -R is refused here; with vm.mmap_rnd_bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo '?')" \
       "(above 28) TSan may fail with 'unexpected memory mapping'" >&2
fi
"${no_aslr[@]}" ctest --preset tsan -j "$jobs" "$@"
