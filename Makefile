# The two entry points of README.md. Both install what they need first.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: demo test python bench build deps configure clean format test-long test-sanitize test-sanitize-core test-tsan fuzz check-fresh check-format

deps:
	scripts/install-deps

configure:
	cmake -S . -B $(BUILD_DIR) -G Ninja $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Installs dependencies, builds Release and runs kiln on a built-in model.
demo: deps build
	scripts/demo $(BUILD_DIR)

# Installs dependencies, builds and runs every test through ctest.
test: deps build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# Builds, then installs the Python package (python/) with kiln's libraries
# inside it into a venv that sees Debian's numpy and torch (PEP 668: Debian's
# pip refuses the system Python), offline. Works from any folder, without the
# build tree: scripts/python-install --help.
PYTHON_VENV ?= .venv
python: deps build
	scripts/python-install --build-dir $(BUILD_DIR) --venv $(PYTHON_VENV)

# Benchmarks against peers (ONNX Runtime CPU, PyTorch CPU), side by side.
# Not part of `make test`.
bench: deps build
	bench/run --build-dir $(BUILD_DIR)

# Proves `make demo` and `make test` on a bare Debian 12 root (mmdebstrap +
# chroot; needs root, network to Debian's registry and many minutes). By hand,
# not part of `make test`: scripts/check-fresh --help.
check-fresh:
	scripts/check-fresh --jobs $(JOBS)

format:
	git ls-files -- '*.c' '*.h' '*.cpp' '*.hpp' '*.cu' '*.cuh' | xargs clang-format -i

check-format: deps
	scripts/check-format

clean:
	rm -rf $(BUILD_DIR)

# The long variants of the reliability tests (docs/reliability.md): 600
# SIGKILLed cache processes, 30 s of concurrent writers/readers/evictor, every
# payload byte of real blobs flipped, thousands of plan bit flips.
test-long: deps build
	cd $(BUILD_DIR) && KILN_LONG_TESTS=1 ctest --output-on-failure -j $(JOBS) -L reliability

# ASan+UBSan build of the unit and reliability tests (oneDNN itself is not
# instrumented), then ThreadSanitizer on the concurrency tests (cache layer
# only: oneDNN's OpenMP runtime is not TSan-instrumented).
# test-sanitize-core (CI) instruments only what the core reliability tests
# need (cache, format, key, frontend, ir): no oneDNN layers, no CLI.
SANITIZE_DIR ?= build-asan
TSAN_DIR ?= build-tsan
SANITIZE_FLAGS = -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DKILN_WERROR=OFF
ASAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
test-sanitize: deps
	cmake -S . -B $(SANITIZE_DIR) -G Ninja $(SANITIZE_FLAGS) -DKILN_SANITIZE="address;undefined" -DKILN_RELIABILITY_CLI=ON
	cmake --build $(SANITIZE_DIR) -j $(JOBS) --target kiln_unit_tests kiln_reliability_core_tests kiln_reliability_tests
	cd $(SANITIZE_DIR) && $(ASAN_ENV) ctest --output-on-failure -j $(JOBS) -E '^(conformance|conformance_cpu|cli|example_.*)$$'
	$(MAKE) test-tsan

test-sanitize-core: deps
	cmake -S . -B $(SANITIZE_DIR)-core -G Ninja $(SANITIZE_FLAGS) -DKILN_SANITIZE="address;undefined" -DKILN_RELIABILITY_CLI=OFF
	cmake --build $(SANITIZE_DIR)-core -j $(JOBS) --target kiln_reliability_core_tests
	$(ASAN_ENV) $(SANITIZE_DIR)-core/tests/reliability/kiln_reliability_core_tests
	$(MAKE) test-tsan

test-tsan: deps
	cmake -S . -B $(TSAN_DIR) -G Ninja $(SANITIZE_FLAGS) -DKILN_SANITIZE=thread -DKILN_RELIABILITY_CLI=OFF
	cmake --build $(TSAN_DIR) -j $(JOBS) --target kiln_reliability_core_tests
	TSAN_OPTIONS=halt_on_error=1 $(TSAN_DIR)/tests/reliability/kiln_reliability_core_tests --gtest_filter='Concurrency.*'

# libFuzzer (clang): the envelope parser, the plan verifier and the ONNX
# importer, each for FUZZ_SECONDS from its seed corpus in fuzz/corpus/.
# New inputs go to $(FUZZ_DIR)/corpus-<target>, findings to $(FUZZ_DIR)/.
# Not part of `make test`.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
fuzz: deps
	cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
	  -DKILN_FUZZ=ON -DKILN_WERROR=OFF -DKILN_BUILD_TESTS=OFF
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzz_envelope fuzz_plan fuzz_onnx
	for t in envelope plan onnx; do \
	  limits="-rss_limit_mb=4096 -malloc_limit_mb=2048 -timeout=30"; \
	  [ $$t = plan ] && limits="-rss_limit_mb=6000 -malloc_limit_mb=6000 -timeout=120"; \
	  mkdir -p $(FUZZ_DIR)/corpus-$$t && \
	  $(FUZZ_DIR)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) $$limits \
	    -artifact_prefix=$(FUZZ_DIR)/$$t- -print_final_stats=1 \
	    $(FUZZ_DIR)/corpus-$$t fuzz/corpus/$$t || exit 1; \
	done
