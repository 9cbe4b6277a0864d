# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/streamlit run app.py --server.address localhost --server.port 8501 --server.headless true

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done
	$(PY) benchmarks/collect.py

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts
