# The QuRe study as a build graph. `make reproduce` and `make test` are the two README commands;
# each builds .venv first if it is missing or older than pyproject.toml.
PROFILE ?= default
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU machines: the pinned CPU wheel. GPU users: see the README (TORCH_SPEC= keeps an installed torch).
TORCH_SPEC ?= torch==2.13.0
RUN := runs/$(PROFILE)
STAGES := 00_make_data 01_warmup 02_mine_negatives 03_preference_finetune 04_evaluate 05_explore
LIB := $(shell find qurelib -name '*.py' 2>/dev/null)
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1

.PHONY: venv test test-unit test-notebooks reproduce ablation bench gpu-check clean-runs help
.DELETE_ON_ERROR:

help:
	@echo "make reproduce [PROFILE=default|smoke]  the whole study on the embedded benchmark"
	@echo "make test                               every test (unit + notebooks on the smoke profile)"
	@echo "make ablation [PROFILE=...]             the hard-negative strategy sweep"
	@echo "make bench                              fast paths vs naive, side by side"
	@echo "make gpu-check                          CUDA tests and benchmark (needs a GPU)"

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_SPEC),$(PY) -m pip install -q "$(TORCH_SPEC)")
	$(PY) -m pip install -q -e ".[dev,notebooks]"
	touch $@

test: venv
	$(PY) -m pytest -q tests notebooks --nbval-lax

test-unit: venv
	$(PY) -m pytest -q tests

# --- the reproduction chain: stage N reads what stage N-1 wrote under runs/<profile>/ -------
reproduce: venv $(RUN)/05_explore.ipynb
	@echo "done: executed notebooks and results in $(RUN)/, figures in figures/$(PROFILE)/"
	@test ! -f $(RUN)/results.md || cat $(RUN)/results.md

$(RUN)/00_make_data.ipynb: notebooks/00_make_data.ipynb params/$(PROFILE).yaml $(LIB) | venv
$(RUN)/01_warmup.ipynb: $(RUN)/00_make_data.ipynb
$(RUN)/02_mine_negatives.ipynb: $(RUN)/01_warmup.ipynb
$(RUN)/03_preference_finetune.ipynb: $(RUN)/02_mine_negatives.ipynb
$(RUN)/04_evaluate.ipynb: $(RUN)/03_preference_finetune.ipynb
$(RUN)/05_explore.ipynb: $(RUN)/04_evaluate.ipynb

$(RUN)/%.ipynb: notebooks/%.ipynb params/$(PROFILE).yaml | venv
	@mkdir -p $(RUN)
	$(PY) -m papermill --progress-bar -f params/$(PROFILE).yaml -p profile $(PROFILE) $< $@

ablation: venv
	$(PY) -m qurelib.ablation --profile $(PROFILE)

bench: venv
	$(PY) -m qurelib.bench

gpu-check: venv
	$(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device visible to torch')"
	$(PY) -m pytest -q --run-gpu -m gpu
	$(PY) -m qurelib.bench --device cuda --only mining,scoring,model

clean-runs:
	rm -rf runs/$(PROFILE) figures/$(PROFILE)
