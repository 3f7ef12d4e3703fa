# `make demo` and `make test` each do all set-up on a fresh Debian machine
# (apt packages, .venv, pip install), idempotently, then run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever the package, its native core or the shipped models change.
SOURCES := pyproject.toml CMakeLists.txt $(shell find csrc kboost_rt models examples -type f \
	-not -path '*/__pycache__/*' -not -name '*.so' 2>/dev/null)

.PHONY: setup demo test test-aarch64 lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: $(SOURCES) tools/setup_system.sh
	tools/setup_system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet ".[torch,train,bench,eval,live,test]"
	touch $@

demo: setup
	$(BIN)/kboost-rt demo

test: setup
	$(BIN)/ruff check kboost_rt tests tools
	$(BIN)/pytest -q

# The C library cross-built for aarch64 (generic and NEON kernels) and checked
# under qemu-user against test vectors computed on x86-64 (tests/native/).
AARCH64_BUILD := build/aarch64
test-aarch64:
	tools/setup_system.sh cmake g++-aarch64-linux-gnu qemu-user
	cmake -S . -B $(AARCH64_BUILD) -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
		-DCMAKE_BUILD_TYPE=Release -DKB_PYTHON=OFF -DKB_KERNEL_CHECK=ON --log-level=WARNING
	cmake --build $(AARCH64_BUILD) -j2 --target kernel_check
	QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64 $(AARCH64_BUILD)/kernel_check \
		--require generic --require neon tests/data/kernel_vectors/*.kbv

lint: setup
	$(BIN)/ruff check kboost_rt tests tools
	$(BIN)/ruff format --check kboost_rt tests tools

clean:
	rm -rf $(VENV) build dist out
