# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8765

.PHONY: demo test lint bench figures install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Starts the gateway on the replay fleet (real recorded answers of arena-bench-v1), sends all 300
# prompts through the official openai SDK with model="auto", prints the savings, then the ledger report.
demo: $(STAMP)
	mkdir -p out && rm -f out/demo-ledger.db*
	$(PY) -m tierwise.cli serve --config examples/demo.yaml --port $(PORT) & echo $$! > out/demo-gateway.pid; \
	trap 'kill $$(cat out/demo-gateway.pid) 2>/dev/null; wait' EXIT; \
	$(PY) examples/demo.py --base-url http://127.0.0.1:$(PORT)/v1 --wait && \
	kill -TERM $$(cat out/demo-gateway.pid) && wait $$(cat out/demo-gateway.pid); \
	$(PY) -m tierwise.cli report --config examples/demo.yaml

test: $(STAMP)
	$(PY) -m ruff check src tests bench examples scripts
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples scripts
	$(PY) -m ruff format --check src tests bench examples scripts

bench: $(STAMP)
	$(PY) bench/overhead.py

# Re-runs every `tierwise eval` the README quotes and fails if one figure differs by a digit
# (scripts/figures.py). The learned router's two MMLU cross-validations take about 25 minutes each and
# are skipped: `make figures FIGURES_FLAGS=--all` runs them too.
figures: $(STAMP)
	nice $(PY) scripts/figures.py $(FIGURES_FLAGS)

clean:
	rm -rf $(VENV) out build *.egg-info
