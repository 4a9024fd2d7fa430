# The two commands of the README. Both set up .venv/ first (idempotent, seconds once cached).
PY := .venv/bin/python
SETUP_STAMP := .venv/.mmseg_ovseg_setup

.PHONY: setup demo test clean-demo

$(SETUP_STAMP): tools/setup_env.sh requirements.txt setup.py
	bash tools/setup_env.sh
	touch $(SETUP_STAMP)

setup: $(SETUP_STAMP)

# Train + evaluate + open-vocabulary inference on the embedded synthetic dataset.
demo: $(SETUP_STAMP)
	$(PY) tools/demo.py

test: $(SETUP_STAMP)
	$(PY) -m pytest -q tests

clean-demo:
	rm -rf work_dirs/demo data/synthetic
