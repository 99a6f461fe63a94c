#!/usr/bin/env bash
# Installs dynabert from the build tree into a temporary prefix, then builds tests/consumer with
# find_package(dynabert) and a one-line g++ command with pkg-config, and runs both.
set -euo pipefail
src=$1 build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src/tests/consumer" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/build" >/dev/null
"$tmp/build/consumer"
"$tmp/build/consumer_compiled"
flags=$(PKG_CONFIG_PATH="$tmp/prefix/share/pkgconfig" pkg-config --cflags --libs dynabert)
g++ -O1 "$src/tests/consumer/main.cpp" $flags -o "$tmp/consumer_pc"
"$tmp/consumer_pc"
echo "consumer: 3 passed, 0 failed"
