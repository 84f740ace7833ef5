# The two commands a user needs: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean-state

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# MTCNN weights ship as data inside facenet-pytorch; its pins clash with current torch, so no deps.
	$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) run.py --config configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q

clean-state:
	rm -rf state out
