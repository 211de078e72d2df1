# `make demo` and `make test` work on a fresh machine: each creates or reuses .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# tests/test_dopamine.py checks Dopamine checkpoints against dopamine-rl's own networks and Checkpointer. Its
# dependencies (TensorFlow, OpenAI Baselines, legacy gym) are heavy or do not install on Python 3.11, and those
# modules do not need them: installed without them.
DOPAMINE := dopamine-rl==4.1.2 gin-config==0.5.0

.PHONY: demo test install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps $(DOPAMINE)
	touch $(STAMP)

# The whole method on the bundled Pong agent and generator (`jaxprobe demo --game seaquest` for Seaquest's).
demo: $(STAMP)
	$(BIN)/jaxprobe demo --out out/demo

# Headless Chromium renders the HTML report in its test; installed where apt-get and root allow it,
# otherwise that one test is skipped with a message.
CHROMIUM_STAMP := $(VENV)/.chromium-stamp

$(CHROMIUM_STAMP): $(STAMP)
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }; } || \
	  echo "chromium could not be installed here: the report's render test will be skipped"
	touch $(CHROMIUM_STAMP)

# The formatter and linter first (configured in pyproject.toml), then the tests.
test: $(STAMP) $(CHROMIUM_STAMP)
	$(BIN)/ruff format --check jaxprobe tests benchmarks experiments
	$(BIN)/ruff check jaxprobe tests benchmarks experiments
	$(BIN)/python -m pytest -q

BENCH_STAMP := $(VENV)/.bench-stamp

# OpenCV: gymnasium's AtariPreprocessing (collection.py) needs it and the bench extra does not list it.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]' opencv-python-headless==4.14.0.94
	touch $(BENCH_STAMP)

# Every comparison of benchmarks/README.md, rows appended to benchmarks/results.csv (their commands there).
# The PyTorch ports are checked against our networks first: every ratio compares one computation. The
# `subpixel` layouts, conv_grad.py's per-layer table and its generator group (generator_step.py times the
# step against PyTorch) are left to their own commands, so that a clean clone's run stays under 20 minutes
# on 2 cores on a slow day (24 min with them on 2026-12-02; 19 min 52 s with the generator group; 7-10 min
# without it on 2026-12-02/03).
bench: $(BENCH_STAMP)
	$(BIN)/python -m pytest -q tests/test_torch_port.py
	$(BIN)/python benchmarks/conv_grad.py --groups nature,defaults --rounds 2
	$(BIN)/python benchmarks/latent_search.py --batches 256 --steps 3 --rounds 2 --layouts transpose
	$(BIN)/python benchmarks/generator_step.py --batches 16,32 --rounds 3 --layouts transpose
	$(BIN)/python benchmarks/guided_backprop.py --batches 32,256 --rounds 5
	$(BIN)/python benchmarks/perturbation.py --batches 8 --stride 5 --rounds 3
	$(BIN)/python benchmarks/collection.py --num-envs 8 --steps 200 --rounds 3
	$(BIN)/python benchmarks/scaling.py --batches 64,256,1024 --devices 1,2,4,8 --rounds 1
	# One 4096-row program: with jaxprobe's XLA flag (YNNPACK off, jaxlib 0.10) it aborts XLA:CPU with
	# std::bad_alloc, so `jaxprobe probe` runs 1024-row chunks on CPU; 8192 rows would be two such programs.
	JAXPROBE_KEEP_XLA_FLAGS=1 $(BIN)/python benchmarks/scaling.py --batches 4096 --devices '' --processes '' --rounds 1

clean:
	rm -rf out .pytest_cache
