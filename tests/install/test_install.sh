#!/usr/bin/env bash
# Installs the build tree into a temporary prefix, then builds a C program
# outside kiln's tree against it twice (CMake package, pkg-config) and runs
# both, with kiln's build tree out of their library paths.
# Usage: test_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
source=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
test -x "$work/prefix/bin/kiln"
test -f "$work/prefix/include/kiln/kiln.h"
"$work/prefix/bin/kiln" zoo --list > /dev/null

cmake -S "$source/tests/install/consumer" -B "$work/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" > /dev/null
cmake --build "$work/cmake" > /dev/null
"$work/cmake/consumer"

export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
cc -std=c99 -Wall -Werror -o "$work/pc_consumer" "$source/tests/install/consumer/main.c" $(pkg-config --cflags --libs kiln)
"$work/pc_consumer"
echo "install: ok"
