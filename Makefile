# sepconv — the two commands a user needs: `make demo` and `make test`.
# Each creates .venv on first use and installs the pinned dependencies and the package.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: demo test fashion-mnist clean install

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sepconv demo --out $(DEMO_OUT)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

# Real Fashion-MNIST IDX files from Debian (no download from elsewhere is possible here).
fashion-mnist:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \
	  || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
	  || (echo "install the Debian package dataset-fashion-mnist (needs root: sudo apt-get install dataset-fashion-mnist)" >&2; exit 1)
	@ls /usr/share/datasets/fashion-mnist

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
