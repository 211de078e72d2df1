# `make demo` and `make test` work on a fresh machine: each creates or reuses .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxprobe saliency --agent jaxprobe/assets/agents/pong-untrained --method guided --frames 16 --out out/demo
	@echo "open out/demo/grid.png"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf out .pytest_cache
