# The two commands a user needs: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TEACHER := .cache/teacher-venv/.installed

.PHONY: demo test bench clean-state system-deps

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# MTCNN weights ship as data inside facenet-pytorch; its pins clash with current torch, so no deps.
	$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0
	# dlib's CC0 face-recognition ResNet weights: the trainer's initialisation and distillation teacher.
	$(PY) -m pip install -q --no-deps face-recognition-models==0.3.0
	@touch $(STAMP)

# dlib itself, in a venv of its own: only the parity test of our PyTorch port needs it.
$(TEACHER): 
	$(PYTHON) -m venv .cache/teacher-venv || python3 -m venv .cache/teacher-venv
	.cache/teacher-venv/bin/pip install -q dlib-bin==20.0.1.post1 numpy==2.4.6 face-recognition-models==0.3.0
	@touch $(TEACHER)

# Enrol the Hamilton clip's two people into gallery `demo`, recognise them in the clip (see demo.sh).
demo: $(STAMP)
	PY=$(PY) sh demo.sh

# Debian's Chromium (+ driver) and mosquitto, which the browser and MQTT tests drive for real; installed only where
# missing (apt needs root, as on CI).
system-deps:
	@command -v chromium >/dev/null 2>&1 && { command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; } \
	  || { echo "installing chromium, chromium-driver and mosquitto (Debian)"; apt-get update -qq \
	       && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver mosquitto >/dev/null; }

test: $(STAMP) $(TEACHER) system-deps
	$(PY) -m pytest -q

clean-state:
	rm -rf state out
