#!/usr/bin/env bash
# Each layer sees only its own headers and those of the layers it links
# (include views, see kiln_layer in CMakeLists.txt). This compiles one-line
# files with the real flags of a layer's source, from compile_commands.json:
# a right-way include must compile and a wrong-way one must not, so the
# check cannot pass by failing for an unrelated reason.
# Usage: test_include_views.sh BUILD_DIR
set -euo pipefail
build="${1:?usage: test_include_views.sh BUILD_DIR}"
db="$build/compile_commands.json"
[ -f "$db" ] || { echo "no $db (configure with CMAKE_EXPORT_COMPILE_COMMANDS)"; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# flags_of SOURCE_SUFFIX: the compile command of that source, minus -o/-c/-M* parts.
flags_of() {
  /usr/bin/python3 - "$db" "$1" <<'PY'
import json, shlex, sys
db, suffix = sys.argv[1], sys.argv[2]
entry = next(e for e in json.load(open(db)) if e["file"].endswith(suffix))
args = shlex.split(entry["command"])
out, skip = [], False
for a in args[1:]:
    if skip: skip = False; continue
    if a in ("-o", "-c", "-MF", "-MT"): skip = True; continue
    if a.startswith("-M") or a == entry["file"]: continue
    out.append(a)
print(entry["directory"]); print(shlex.join(args[:1] + out))
PY
}

failures=0
# expect LAYER_SOURCE HEADER compiles|fails
expect() {
  local source="$1" header="$2" want="$3" dir cmd
  { read -r dir; read -r cmd; } < <(flags_of "$source")
  printf '#include "%s"\n' "$header" >"$work/probe.cpp"
  if (cd "$dir" && eval "$cmd -fsyntax-only $work/probe.cpp") >"$work/log" 2>&1; then
    got=compiles
  elif grep -q "$header: No such file or directory" "$work/log"; then
    got=fails  # not found on this layer's include path, the only failure that counts
  else
    got="fails for another reason"
  fi
  if [ "$got" = "$want" ]; then
    echo "ok: $header from ${source} $got"
  else
    echo "FAILED: $header from ${source} $got (expected: $want)"; sed 's/^/  /' "$work/log" | head -5
    failures=$((failures + 1))
  fi
}

expect src/cache/store.cpp format/envelope.hpp compiles          # cache links format
expect src/cache/store.cpp runtime/compiled_model.hpp fails      # runtime sits above cache
expect src/cache/store.cpp backends/cpu/cpu_backend.hpp fails    # caches never see a backend
expect src/ir/graph.cpp util/log.hpp compiles                    # ir links util
expect src/ir/graph.cpp reference/executor.hpp fails             # the reference backend sits above ir
expect src/reference/executor.cpp passes/passes.hpp fails        # the passes sit above it
expect src/backends/backend.cpp backends/cpu/cpu_backend.hpp fails  # the interface, not the cpu backend
expect src/backends/cpu/cpu_backend.cpp backends/backend.hpp compiles
echo "$((8 - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
