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

# The cuda backend, where built, is a plugin the installed kiln opens from its
# own lib folder: with a GPU the run works; without one the plugin's own
# "cuda backend: <reason>" error proves it was found (a missing plugin says
# "cannot load its plugin").
if [ -f "$work/prefix/lib/libkiln_backend_cuda.so" ]; then
  "$work/prefix/bin/kiln" zoo resnet_tiny -o "$work/tiny.onnx" > /dev/null
  if ! "$work/prefix/bin/kiln" run "$work/tiny.onnx" --backend cuda --no-cache > "$work/cuda.log" 2>&1; then
    grep -q "cuda backend: " "$work/cuda.log" || { echo "install: cuda plugin not loaded:"; cat "$work/cuda.log"; exit 1; }
  fi
fi

cmake -S "$source/tests/install/consumer" -B "$work/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" > /dev/null
cmake --build "$work/cmake" > /dev/null
"$work/cmake/consumer"

export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
cc -std=c99 -Wall -Werror -o "$work/pc_consumer" "$source/tests/install/consumer/main.c" $(pkg-config --cflags --libs kiln)
"$work/pc_consumer"
echo "install: ok"
