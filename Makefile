# The two entry points of README.md. Both install what they need first.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: demo test bench build deps configure clean format

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

# Benchmarks against peers (ONNX Runtime CPU, PyTorch CPU), side by side.
# Not part of `make test`.
bench: deps build
	bench/run --build-dir $(BUILD_DIR)

format:
	find include src tools tests -name '*.hpp' -o -name '*.cpp' -o -name '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
