# fedids: two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# The real attack capture `make demo` runs the detector on (a scan from ESnet's public captures).
DEMO_PCAP ?= ../shared/data/pcaps/esnet_masscan_tcp_0_1000_20190821.pcap
# Flower must never try to install packages at run time (these machines are offline).
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
# pytest-xdist workers for `make test`: the CI machine has 2 cores (`make test TEST_WORKERS=0` runs serially).
TEST_WORKERS ?= 2

.PHONY: demo test test-fast system-deps venv clean bench

# libpcap is needed by the pcap flow extractor (netflower). Installed once, only if missing.
system-deps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libpcap\.so'; then \
		echo "installing libpcap (Debian package libpcap0.8)"; \
		(apt-get update -qq && apt-get install -y -qq libpcap0.8 >/dev/null) || \
		echo "warning: could not install libpcap0.8; pcap input will not work"; \
	fi

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (fedids needs Python 3.11)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch==2.13.0 is pinned exactly in pyproject.toml: its CPU wheel is on this machine's disk.
	$(PIP) install -q -e ".[full,test]"
	touch $(STAMP)

venv: system-deps $(STAMP)

demo: venv
	$(VENV)/bin/fedids demo --out runs/demo --pcap $(DEMO_PCAP)

# Lint, format and types first (seconds), then the tests; all configured in pyproject.toml.
test: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy src
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: venv
	$(VENV)/bin/python -m pytest -q -m "not slow and not integration"

bench: venv
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
