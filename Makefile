# The QuRe study as a build graph. `make reproduce` and `make test` are the two README commands;
# each builds .venv first if it is missing or older than pyproject.toml.
PROFILE ?= default
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU machines: the pinned CPU wheel. GPU users: see the README (TORCH_SPEC= keeps an installed torch).
TORCH_SPEC ?= torch==2.13.0
RUNS ?= runs
RUN := $(RUNS)/$(PROFILE)
STAGES := 00_make_data 01_warmup 02_mine_negatives 03_preference_finetune 04_evaluate 05_explore
LIB := $(shell find qurelib -name '*.py' 2>/dev/null)
# Real datasets: make reproduce PROFILE=paper-fiq DATA_ROOT=/path/to/fashioniq
DATA_ROOT ?=
# More papermill parameters for every stage: make reproduce NB_ARGS="-p hpfiq_path /data/hpfiq.json"
NB_ARGS ?=
# Training processes of stages 01 and 03 (torchrun data-parallel, one per GPU): make reproduce NPROC=2
NPROC ?= 1
PAPERMILL_ARGS := $(if $(DATA_ROOT),-p data_root $(DATA_ROOT)) $(NB_ARGS)
export PYTHONUNBUFFERED := 1
# Offline by default (tests never download); a GPU user with network may pass HF_HUB_OFFLINE=0.
export HF_HUB_OFFLINE ?= 1

.PHONY: venv test test-unit mutation lab reproduce ablation bench gpu-check browser-check clean-runs help FORCE
.DELETE_ON_ERROR:

help:
	@echo "make reproduce [PROFILE=default|smoke]  the whole study on the embedded benchmark"
	@echo "make reproduce NPROC=2                  ... with training data-parallel on 2 processes (torchrun)"
	@echo "make test                               every test (unit + notebooks on the smoke profile)"
	@echo "make ablation [PROFILE=...]             the hard-negative strategy sweep"
	@echo "make bench                              fast paths vs naive, side by side"
	@echo "make gpu-check                          CUDA tests and benchmark (needs a GPU)"
	@echo "make lavis-parity                       the LAVIS converter against salesforce-lavis itself"
	@echo "make mutation [MUTATION=train]          mutmut kill scores of the core (slow; docs/MUTATION.md)"
	@echo "make lab                                JupyterLab on notebooks/ (installs it into .venv)"
	@echo "make browser-check                      the smoke run's notebooks in JupyterLab + Chromium"

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_SPEC),$(PY) -m pip install -q "$(TORCH_SPEC)")
	$(PY) -m pip install -q -e ".[dev,notebooks]"
	touch $@

# The smoke chain and its ablation first, in a fresh temporary runs folder (QURELIB_RUNS_DIR), so the
# library under test is what trains; tests/test_notebook_outputs.py then looks at its executed notebooks, and the
# notebooks under nbval reuse its runs. Line coverage per module is printed at the end.
test: venv
	@tmp=$$(mktemp -d -t qurelib-test-runs.XXXXXX) && \
	QURELIB_RUNS_DIR=$$tmp $(MAKE) --no-print-directory reproduce PROFILE=smoke RUNS=$$tmp && \
	QURELIB_RUNS_DIR=$$tmp $(MAKE) --no-print-directory -j2 ablation PROFILE=smoke RUNS=$$tmp && \
	QURELIB_RUNS_DIR=$$tmp $(PY) -m pytest -q tests notebooks --nbval-lax --cov=qurelib --cov-report=term \
		--cov-report=html:$$tmp/coverage && rm -rf $$tmp

test-unit: venv
	$(PY) -m pytest -q tests

# --- mutation testing (docs/MUTATION.md): slow, not part of `make test` -----------------------
# mutmut over the core, one group of modules at a time, each with only the unit tests that concern
# it (tests/mutation.py); prints the kill score per module. One group: make mutation MUTATION=train
MUTATION ?= train evaluate qure metrics
MUTATION_JOBS ?= 1
mutation: venv
	$(PY) -m pip install -q -e ".[mutation]"
	nice -n 19 $(PY) tests/mutation.py run $(MUTATION) --jobs $(MUTATION_JOBS)

# --- the reproduction chain: stage N reads what stage N-1 wrote under runs/<profile>/ -------
reproduce: venv $(RUN)/05_explore.ipynb $(RUN)/html/index.html
	@echo "done: executed notebooks and results in $(RUN)/, figures in figures/$(PROFILE)/"
	@echo "      the study in a browser: $(RUN)/html/index.html"
	@test ! -f $(RUN)/results.md || cat $(RUN)/results.md

# What the command line adds (DATA_ROOT, NB_ARGS) is an input of every stage: it is written to
# $(RUN)/.args, rewritten (and so newer) only when it changes, and stage 00 depends on it.
$(RUN)/.args: FORCE
	@mkdir -p $(RUN)
	@echo '$(PAPERMILL_ARGS)' | cmp -s - $@ || echo '$(PAPERMILL_ARGS)' > $@
FORCE:

# NPROC changes results beyond float rounding (data-parallel gradients round differently, and a
# rounding-level weight difference can move a drop pair, so later mined sets differ): it is an
# input of the training stages, rewritten only when it changes; stage 01 (and so 02-05) depends on it.
$(RUN)/.nproc: FORCE
	@mkdir -p $(RUN)
	@echo '$(NPROC)' | cmp -s - $@ || echo '$(NPROC)' > $@

# A stage runs through qurelib.study.runner: each notebook gets only the parameters it declares,
# an unknown -p name is an error, and the output notebook appears only when every cell ran.
STAGE = $(PY) -m qurelib.study.runner --chain notebooks --params params/$(PROFILE).yaml -p profile $(PROFILE) \
	-p nproc $(NPROC) $(PAPERMILL_ARGS)

$(RUN)/00_make_data.ipynb: notebooks/00_make_data.ipynb params/$(PROFILE).yaml $(RUN)/.args $(LIB) | venv
$(RUN)/01_warmup.ipynb: $(RUN)/00_make_data.ipynb $(RUN)/.nproc
$(RUN)/02_mine_negatives.ipynb: $(RUN)/01_warmup.ipynb
$(RUN)/03_preference_finetune.ipynb: $(RUN)/02_mine_negatives.ipynb
$(RUN)/04_evaluate.ipynb: $(RUN)/03_preference_finetune.ipynb
$(RUN)/05_explore.ipynb: $(RUN)/04_evaluate.ipynb

# the executed notebooks as HTML pages (figures embedded) and an index with the results tables
$(RUN)/html/index.html: $(patsubst %,$(RUN)/%.ipynb,$(STAGES)) qurelib/study/html_report.py | venv
	$(PY) -m qurelib.study.html_report $(RUN)

$(RUN)/%.ipynb: notebooks/%.ipynb params/$(PROFILE).yaml | venv
	$(STAGE) $< $@

# --- the ablation: notebook 03 once per strategy, each a fork of the same warm-up (make -j ok) ---
ABLATION_K ?= 20
# beyond the paper (issue 11): the drops searched in the first 2 / 5 / 10 % of the corpus below the
# target (2 %: the share of the paper's top-k ablations, k = 100 of ~6,000), and the scale-free rule
ABLATION := drops_paper top_k after_target_top_k percent_of_positive all \
	drops_window_0.02 drops_window_0.05 drops_window_0.1 drops_scale_free
args_drops_paper := -p strategy drops -p rule paper
args_drops_window_0.02 := -p strategy drops -p window 0.02
args_drops_window_0.05 := -p strategy drops -p window 0.05
args_drops_window_0.1 := -p strategy drops -p window 0.1
args_drops_scale_free := -p strategy drops -p rule scale_free
args_top_k := -p strategy top_k -p k $(ABLATION_K)
args_after_target_top_k := -p strategy after_target_top_k -p k $(ABLATION_K)
args_percent_of_positive := -p strategy percent_of_positive -p ratio 0.95 -p k $(ABLATION_K)
args_all := -p strategy all

ablation: venv $(RUN)/06_ablation_summary.ipynb
	$(PY) -m qurelib.study.html_report $(RUN)
	@cat $(RUN)/ablation.md

$(RUN)/ablation/03_%.ipynb: notebooks/03_preference_finetune.ipynb $(RUN)/01_warmup.ipynb | venv
	$(STAGE) -p run_name ablation_$* -p train_baseline False $(args_$*) $< $@

$(RUN)/06_ablation_summary.ipynb: notebooks/06_ablation_summary.ipynb $(RUN)/04_evaluate.ipynb \
		$(patsubst %,$(RUN)/ablation/03_%.ipynb,$(ABLATION)) | venv
	$(STAGE) $< $@

bench: venv
	$(PY) -m qurelib.bench

gpu-check: venv
	$(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device visible to torch')"
	$(PY) -m pytest -q --run-gpu -m gpu
	$(PY) -m qurelib.bench --device cuda --only mining,scoring,model

# root (most containers) must pass --allow-root; LAB_ARGS="--ip=0.0.0.0 --port=8888" to reach it from outside
LAB_ARGS ?=
lab: venv
	$(PY) -m pip install -q -e ".[lab]"
	@echo "JupyterLab: open the http://127.0.0.1:<port>/lab?token=... URL printed below (Ctrl-C stops it)"
	$(VENV)/bin/jupyter lab --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) notebooks/

# JupyterLab + Playwright + Debian's chromium on the smoke run (tools/browser_check.py says what)
browser-check: venv
	$(MAKE) --no-print-directory reproduce PROFILE=smoke
	$(PY) -m pip install -q -e ".[browser]"
	$(PY) tools/browser_check.py --profile smoke

clean-runs:
	rm -rf runs/$(PROFILE) figures/$(PROFILE)

# --- parity with salesforce-lavis, the paper's library, in its own environment -------------------
# LAVIS 1.0.2 pins transformers < 4.27 (qurelib needs 5.x) and imports only with numpy < 2 and
# pandas < 3: .venv-lavis (~2.3 GB, ~1-3 min, built once and reused). Torch is the CPU wheel on disk
# (2.13.0) with PyPI's torchvision 0.28.0 beside it; left to itself LAVIS pulls the CUDA build of
# torch 2.14.1 (6.8 GB, more than some CI machines have free). LAVIS regenerates
# tests/fixtures/lavis_tiny from its own modules, then .venv checks qurelib's converter against it
# (tools/lavis_parity.py, tests/test_lavis.py).
LAVIS_VENV := .venv-lavis
# torch first on its own, so pip takes the CPU wheel on disk; LAVIS_SPEC then keeps it
LAVIS_TORCH := torch==2.13.0
LAVIS_SPEC := $(LAVIS_TORCH) torchvision==0.28.0 salesforce-lavis==1.0.2 "numpy<2" "pandas<3"
.PHONY: lavis-parity

lavis-parity: venv $(LAVIS_VENV)/.installed
	$(LAVIS_VENV)/bin/python tools/lavis_parity.py generate
	$(PY) tools/lavis_parity.py check
	$(PY) -m pytest -q tests/test_lavis.py
	@git diff --quiet -- tests/fixtures/lavis_tiny 2>/dev/null || \
		echo "note: LAVIS wrote a fixture that differs from the committed one (git diff tests/fixtures/lavis_tiny)"

$(LAVIS_VENV)/.installed:
	test -x $(LAVIS_VENV)/bin/python || $(PYTHON) -m venv $(LAVIS_VENV)
	$(LAVIS_VENV)/bin/python -m pip install -q --no-cache-dir $(LAVIS_TORCH)
	$(LAVIS_VENV)/bin/python -m pip install -q --no-cache-dir $(LAVIS_SPEC)
	touch $@
