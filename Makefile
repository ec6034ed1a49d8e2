# Set-up and everyday commands. `make demo` and `make test` install everything they need on a
# fresh Debian machine (virtualenv, Python packages, ARM toolchain, QEMU) and are safe to rerun.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
PYTEST_ARGS ?=
# gcc: the host compiler for the cffi builds and the QEMU instruction-count plugin (plain C: no GLib needed)
TOOLCHAIN_PACKAGES := gcc gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm

.PHONY: setup toolchain test demo lint clean

setup: $(STAMP) toolchain

# apt-get install $(1), as root or through sudo; without apt-get, say what to install instead.
define apt_install
	@if ! command -v apt-get >/dev/null 2>&1; then \
		echo "error: apt-get not found. Install these Debian/Ubuntu packages (or your system's equivalents): $(1)" >&2; \
		exit 1; \
	fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	$$sudo apt-get update && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(1)
endef

# torch first and pinned: the CPU wheel on the machine satisfies it, where an unpinned torch
# would pull a CUDA build of several GB.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) || { $(MAKE) --no-print-directory python-venv && rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/pip install --quiet torch==$(TORCH_VERSION)
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: python-venv
python-venv:
	$(call apt_install,python3-venv)

toolchain:
	@if command -v gcc >/dev/null 2>&1 && command -v arm-none-eabi-gcc >/dev/null 2>&1 && \
		command -v qemu-system-arm >/dev/null 2>&1 && \
		echo '#include <string.h>' | arm-none-eabi-gcc -E -x c - >/dev/null 2>&1; then \
		exit 0; \
	fi; \
	echo "Installing the host and ARM compilers and QEMU: $(TOOLCHAIN_PACKAGES)"; \
	$(MAKE) --no-print-directory toolchain-packages

.PHONY: toolchain-packages
toolchain-packages:
	$(call apt_install,$(TOOLCHAIN_PACKAGES))

# pytest exits 5 when it collected no tests: nothing was checked, so that fails too, with a reason.
test: setup
	@$(VENV)/bin/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests, so nothing was checked." >&2; fi; \
	exit $$status

demo: setup
	$(VENV)/bin/tinyml compile --example digits --out build/digits
	$(VENV)/bin/tinyml validate build/digits
	$(VENV)/bin/tinyml build --board stm32
	$(VENV)/bin/tinyml run build/stm32
	$(VENV)/bin/tinyml size build/stm32

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf build
