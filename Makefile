# The QuRe study as a build graph. `make reproduce` and `make test` are the two README commands;
# each builds .venv first (from the lock file, requirements.lock) if it is missing or older than it.
PROFILE ?= default
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU machines: the lock's CPU wheel of torch. GPU users: see the README (TORCH_SPEC= keeps an installed torch).
TORCH_SPEC ?= torch==2.13.0
LOCK := requirements.lock
# One setting decides where runs live: RUNS (or QURELIB_RUNS_DIR, the same thing for the library).
RUNS ?= $(or $(QURELIB_RUNS_DIR),runs)
space := $(subst ,, )
comma := ,
ifneq ($(words $(RUNS)),1)
$(error RUNS="$(RUNS)" holds a space, which make cannot use in a path; choose a folder without one)
endif
export QURELIB_RUNS_DIR := $(abspath $(RUNS))
RUN := $(RUNS)/$(PROFILE)
# Seeds with intervals: make reproduce SEEDS="0 1 2" (training seeds, the data fixed) or
# DATA_SEEDS="0 1 2" (the generated data varied, training seed fixed): one chain per seed under
# $(RUNS)/seeds/, then mean +- std over them (qurelib.study.seeds).
SEEDS ?=
DATA_SEEDS ?=

# Same seed, same numbers, on any x86-64 CPU: torch, MKL and oneDNN choose kernels by instruction set
# (AVX-512 vs AVX2) and split reductions by thread count, and each choice rounds differently, which
# training amplifies. Pinned here to AVX2 kernels and THREADS threads (qurelib/provenance.py records
# what was in force in every result). NUMERICS=native leaves the machine's own choice.
THREADS ?= 2
NUMERICS ?= pinned
ifeq ($(NUMERICS),pinned)
export OMP_NUM_THREADS := $(THREADS)
export MKL_NUM_THREADS := $(THREADS)
ifeq ($(shell uname -m),x86_64)
export ATEN_CPU_CAPABILITY := avx2
export MKL_CBWR := AVX2
export ONEDNN_MAX_CPU_ISA := AVX2
export NPY_DISABLE_CPU_FEATURES := AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR
endif
endif
STAGES := 00_make_data 01_warmup 02_mine_negatives 03_preference_finetune 04_evaluate 05_explore 07_drop_lab
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

.PHONY: venv lock test test-unit mutation lab reproduce ablation bench gpu-check browser-check clean-runs help FORCE \
	readme-figures smoke-digest
.DELETE_ON_ERROR:

help:
	@echo "make reproduce [PROFILE=default|smoke]  the whole study on the embedded benchmark"
	@echo "make reproduce NPROC=2                  ... with training data-parallel on 2 processes (torchrun)"
	@echo "make reproduce SEEDS=\"0 1 2\"             ... once per training seed, tables as mean +- std"
	@echo "make test                               every test (unit + notebooks on the smoke profile)"
	@echo "make ablation [PROFILE=...]             the hard-negative strategy sweep"
	@echo "make bench                              fast paths vs naive, side by side"
	@echo "make gpu-check                          CUDA tests and benchmark (needs a GPU)"
	@echo "make lavis-parity                       the LAVIS converter against salesforce-lavis itself"
	@echo "make mutation [MUTATION=train]          mutmut kill scores of the core (slow; docs/MUTATION.md)"
	@echo "make lab                                JupyterLab on notebooks/ (installs it into .venv)"
	@echo "make lab-slides                         notebook 07 (the drop lab) as reveal.js slides and HTML"
	@echo "make readme-figures                     copy the README's figures from runs/default/ into figures/"
	@echo "make smoke-digest                       rewrite tests/expected/smoke_digest.json (a deliberate change of numbers)"
	@echo "make lock                               re-resolve requirements.lock (a deliberate upgrade)"
	@echo "make browser-check                      the smoke run's notebooks in JupyterLab + Chromium"

# Every package of the environment at the version and hash of requirements.lock, then qurelib itself
# (no dependency resolved at install time). TORCH_SPEC= (GPU users): the lock without its torch entry,
# beside the CUDA torch 2.13.0 already in .venv.
venv: $(VENV)/.installed
$(VENV)/.installed: $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_SPEC),$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK),\
		$(PY) tools/lockfile.py without torch < $(LOCK) > $(VENV)/lock-without-torch.txt && \
		$(PY) -m pip install -q --require-hashes --no-deps -r $(VENV)/lock-without-torch.txt)
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Re-resolve every dependency (pip-tools in its own small venv): a deliberate upgrade, reviewed as a
# diff of requirements.lock. torch is the CPU wheel (a local version, +cpu) on CPU machines.
LOCK_VENV := .venv-lock
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q "pip-tools==7.7.0")
	echo "torch==2.13.0+cpu" > $(LOCK_VENV)/torch-cpu.txt
	$(LOCK_VENV)/bin/pip-compile -q --extra dev --extra notebooks --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links -c $(LOCK_VENV)/torch-cpu.txt -o $(LOCK) pyproject.toml
	$(LOCK_VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links -o $(LAVIS_LOCK) requirements-lavis.in

# The smoke chain and its ablation first, in a fresh temporary runs folder (QURELIB_RUNS_DIR), so the
# library under test is what trains; tests/test_notebook_outputs.py then looks at its executed notebooks, and the
# notebooks under nbval reuse its runs. Line coverage per module is printed at the end.
# The unit tests run in a random order (pytest-randomly); the seed is printed at the top
# ("Using --randomly-seed=N"): TEST_SEED=N replays that order.
TEST_SEED ?=
test: venv
	@tmp=$$(mktemp -d -t qurelib-test-runs.XXXXXX) && \
	$(MAKE) --no-print-directory reproduce PROFILE=smoke RUNS=$$tmp && \
	$(MAKE) --no-print-directory -j2 ablation PROFILE=smoke RUNS=$$tmp && \
	$(MAKE) --no-print-directory -j2 objectives PROFILE=smoke RUNS=$$tmp OBJECTIVE_RUNS="$(OBJECTIVE_SMOKE)" && \
	QURELIB_RUNS_DIR=$$tmp $(PY) -m pytest -q tests --cov=qurelib --cov-report= $(if $(TEST_SEED),--randomly-seed=$(TEST_SEED)) && \
	QURELIB_RUNS_DIR=$$tmp $(PY) -m pytest -q notebooks --nbval-lax -p no:randomly --cov=qurelib --cov-append \
		--cov-report=term --cov-report=html:$$tmp/coverage && rm -rf $$tmp

test-unit: venv
	$(PY) -m pytest -q tests

# --- mutation testing (docs/MUTATION.md): slow, not part of `make test` -----------------------
# mutmut over the core, one group of modules at a time, each with only the unit tests that concern
# it (tools/mutation.py); prints the kill score per module. One group: make mutation MUTATION=train
MUTATION ?= train evaluate qure metrics
MUTATION_JOBS ?= 1
mutation: venv
	$(PY) -m pip install -q -e ".[mutation]"
	nice -n 19 $(PY) tools/mutation.py run $(MUTATION) --jobs $(MUTATION_JOBS)

# --- the reproduction chain: stage N reads what stage N-1 wrote under runs/<profile>/ -------
ifeq ($(strip $(SEEDS)$(DATA_SEEDS)),)
reproduce: venv $(RUN)/05_explore.ipynb $(RUN)/07_drop_lab.ipynb $(RUN)/html/index.html
	@echo "done: executed notebooks, results and figures in $(RUN)/ (figures/: make readme-figures)"
	@echo "      the study in a browser: $(RUN)/html/index.html"
	@test ! -f $(RUN)/results.md || cat $(RUN)/results.md
else
# one chain per seed, each in its own runs folder (the same commit, data and settings otherwise), then
# mean +- std; each seed's wall time is written beside its run
reproduce ablation: venv
	@for s in $(SEEDS); do t0=$$(date +%s); \
		$(MAKE) --no-print-directory $@ SEEDS= DATA_SEEDS= RUNS=$(RUNS)/seeds/seed-$$s NB_ARGS="$(NB_ARGS) -p seed $$s" \
		|| exit 1; echo $$(( $$(date +%s) - t0 )) > $(RUNS)/seeds/seed-$$s/$(PROFILE)/.wall_$@; done
	@for s in $(DATA_SEEDS); do t0=$$(date +%s); \
		$(MAKE) --no-print-directory $@ SEEDS= DATA_SEEDS= RUNS=$(RUNS)/seeds/data_seed-$$s \
		NB_ARGS="$(NB_ARGS) -p data_seed $$s" || exit 1; \
		echo $$(( $$(date +%s) - t0 )) > $(RUNS)/seeds/data_seed-$$s/$(PROFILE)/.wall_$@; done
	$(PY) -m qurelib.study.seeds $(RUNS) $(PROFILE) $(if $(filter ablation,$@),ablation,results) \
		$(if $(SEEDS),--seeds $(SEEDS)) $(if $(DATA_SEEDS),--data-seeds $(DATA_SEEDS))
endif

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
# 07, the drop lab: built curves, no model; depends on no earlier stage
$(RUN)/07_drop_lab.ipynb: notebooks/07_drop_lab.ipynb params/$(PROFILE).yaml $(LIB) | venv

# the executed notebooks as HTML pages (figures embedded) and an index with the results tables
$(RUN)/html/index.html: $(patsubst %,$(RUN)/%.ipynb,$(STAGES)) qurelib/study/html_report.py | venv
	$(PY) -m qurelib.study.html_report $(RUN)

$(RUN)/%.ipynb: notebooks/%.ipynb params/$(PROFILE).yaml | venv
	$(STAGE) $< $@

# --- the ablation: notebook 03 once per strategy, each a fork of the same warm-up (make -j ok) ---
ABLATION_K ?= 20
# Each variant is a mining spec's text (qurelib/mining_spec.py), which is also its run's name
# (ablation_<spec>) and notebook 03's `mining` parameter. Beyond the paper: the drops searched in the
# first 2 / 5 / 10 % of the corpus below the target (2 %: the share of the paper's top-k ablations,
# k = 100 of ~6,000), and the scale-free rule.
ABLATION := drops-paper top_k-k$(ABLATION_K) after_target_top_k-k$(ABLATION_K) \
	percent_of_positive-k$(ABLATION_K)-r0.95 all drops-w0.02 drops-w0.05 drops-w0.1 drops-scale_free

ifeq ($(strip $(SEEDS)$(DATA_SEEDS)),)
ablation: venv $(RUN)/06_ablation_summary.ipynb
	$(PY) -m qurelib.study.html_report $(RUN)
	@cat $(RUN)/ablation.md
endif

$(RUN)/ablation/03_%.ipynb: notebooks/03_preference_finetune.ipynb $(RUN)/01_warmup.ipynb | venv
	$(STAGE) -p run_name ablation_$* -p train_baseline False -p mining $* $< $@

$(RUN)/06_ablation_summary.ipynb: notebooks/06_ablation_summary.ipynb $(RUN)/04_evaluate.ipynb \
		$(patsubst %,$(RUN)/ablation/03_%.ipynb,$(ABLATION)) | venv
	$(STAGE) -p variants "qure,$(subst $(space),$(comma),$(patsubst %,ablation_%,$(ABLATION))),info_nce" $< $@

# --- objectives x H: notebook 03 forked from the same warm-up once per objective and H (make -j ok) ---
# Is QuRe behind InfoNCE because of where H is, or because of how many negatives a step sees? A run is
# obj_<objective>__<H>, H a mining spec's text; the Bradley-Terry cells are the ablation's runs (qure,
# ablation_drops-w0.05, ablation_after_target_top_k-k20, ablation_all: the same settings give the same
# weights). Notebook 08 sums up.
.PHONY: objectives sweep-ndef
OBJECTIVE_H := drops drops-w0.05 after_target_top_k-k$(ABLATION_K) all
# the Bradley-Terry cells of the grid (besides qure): the ablation's runs of the same H
OBJECTIVE_BT := $(patsubst %,ablation_%,$(filter-out drops,$(OBJECTIVE_H)))
oargs_multi_negative_5 := -p objective multi_negative -p negatives 5
oargs_in_batch_hard_1 := -p objective in_batch_hard -p negatives 1
oargs_aux_positive := -p objective aux_positive -p aux_positives 5
oargs_aux_positive_rank := -p objective aux_positive_weighted -p aux_positives 5 -p aux_weighting rank
OBJECTIVE_RUNS ?= $(foreach o,multi_negative_5 in_batch_hard_1,$(foreach h,$(OBJECTIVE_H),$(o)__$(h))) \
	aux_positive__drops-w0.05 aux_positive_rank__drops-w0.05
# make test's wiring check (smoke profile): one fork per new objective, OBJECTIVE_RUNS="$(OBJECTIVE_SMOKE)"
OBJECTIVE_SMOKE := multi_negative_5__drops-w0.05 in_batch_hard_1__drops-w0.05 aux_positive_rank__drops-w0.05

objectives: venv $(RUN)/08_objectives_summary.ipynb
	$(PY) -m qurelib.study.html_report $(RUN)
	@cat $(RUN)/objectives.md

$(RUN)/objectives/03_%.ipynb: notebooks/03_preference_finetune.ipynb $(RUN)/01_warmup.ipynb | venv
	$(STAGE) -p run_name obj_$* -p train_baseline False $(oargs_$(firstword $(subst __, ,$*))) \
		-p mining $(lastword $(subst __, ,$*)) $< $@

$(RUN)/08_objectives_summary.ipynb: notebooks/08_objectives_summary.ipynb $(RUN)/04_evaluate.ipynb \
		$(patsubst ablation_%,$(RUN)/ablation/03_%.ipynb,$(OBJECTIVE_BT)) \
		$(patsubst %,$(RUN)/objectives/03_%.ipynb,$(OBJECTIVE_RUNS)) | venv
	$(STAGE) -p objective_variants "$(subst $(space),$(comma),qure $(OBJECTIVE_BT) $(patsubst %,obj_%,$(OBJECTIVE_RUNS)) info_nce)" $< $@

# QuRe as released and in a 5 % window at E = 30 for each n_def: one chain per n_def under
# $(RUNS)/ndef/n_def-<n>/ (its own warm-up of E // n_def epochs), then a table ($(RUNS)/ndef/ndef_sweep.md)
NDEF_SWEEP ?= 3 6 10
sweep-ndef: venv
	@for n in $(NDEF_SWEEP); do sub=$(RUNS)/ndef/n_def-$$n; \
		$(MAKE) --no-print-directory RUNS=$$sub NB_ARGS="$(NB_ARGS) -p epochs 30 -p n_def $$n -p train_baseline False" \
		$$sub/$(PROFILE)/03_preference_finetune.ipynb $$sub/$(PROFILE)/ablation/03_drops-w0.05.ipynb || exit 1; done
	$(PY) -m qurelib.study.grid ndef-sweep $(RUNS)/ndef $(PROFILE) $(NDEF_SWEEP)

# Training with index re-mining (docs/SCALE.md): the 5 % window fork re-mined from an exact FAISS index and
# from an approximate one (IVF, 16 lists, 4 probed), beside the same fork re-mined from full scores.
INDEX_REMINING := index_flat index_ivf
iargs_index_flat := -p candidates Flat
iargs_index_ivf := -p candidates IVF16,Flat -p candidate_search nprobe=4
.PHONY: index-remining
index-remining: venv $(patsubst %,$(RUN)/index/03_%.ipynb,$(INDEX_REMINING)) $(RUN)/ablation/03_drops-w0.05.ipynb
	$(PY) -m qurelib.study.grid index-remining $(RUN) $(INDEX_REMINING)

$(RUN)/index/03_%.ipynb: notebooks/03_preference_finetune.ipynb $(RUN)/01_warmup.ipynb | venv
	$(STAGE) -p run_name $* -p train_baseline False -p mining drops-w0.05 $(iargs_$*) $< $@

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
	rm -rf $(RUN)

# the drop lab as reveal.js slides (code hidden) and HTML; the deck loads reveal.js from its CDN when opened
.PHONY: lab-slides
lab-slides: $(RUN)/07_drop_lab.ipynb
	$(VENV)/bin/jupyter nbconvert --to slides --no-input --output-dir $(RUN)/slides $<
	$(VENV)/bin/jupyter nbconvert --to html --output-dir $(RUN)/slides $<
	@echo "slides: $(RUN)/slides/07_drop_lab.slides.html"

# The figures the README shows, copied from a finished default run (a run itself writes only under
# runs/, so `git status` stays clean); commit them with the README numbers they illustrate.
README_FIGURES := fig03_score_curves fig05_training_curves_qure fig09_ablation_curves fig10_hardness \
	fig11_curve_tiers fig12_anatomy fig13_ablation_hardness fig14_drop_lab fig15_smoothness_sweep
readme-figures:
	@mkdir -p figures/default
	@for f in $(README_FIGURES); do cp -v $(RUNS)/default/figures/$$f.png figures/default/ || exit 1; done
	@test ! -f $(RUNS)/smoke/screenshots/05_explorer_slider_moved.png || \
		cp -v $(RUNS)/smoke/screenshots/05_explorer_slider_moved.png figures/explorer_jupyterlab.png

# The smoke chain's numbers as make test checks them (tests/test_smoke_digest.py): rerun the smoke
# chain and its ablation in a fresh folder and rewrite the expected file, a deliberate, reviewed change.
smoke-digest: venv
	@tmp=$$(mktemp -d -t qurelib-digest.XXXXXX) && \
	$(MAKE) --no-print-directory reproduce PROFILE=smoke RUNS=$$tmp && \
	$(MAKE) --no-print-directory -j2 ablation PROFILE=smoke RUNS=$$tmp && \
	$(PY) -m qurelib.study.digest write $$tmp/smoke tests/expected/smoke_digest.json && rm -rf $$tmp

# --- parity with salesforce-lavis, the paper's library, in its own environment -------------------
# LAVIS 1.0.2 pins transformers < 4.27 (qurelib needs 5.x) and imports only with numpy < 2 and
# pandas < 3: .venv-lavis (~2.3 GB, ~1-3 min, built once and reused). Torch is the CPU wheel on disk
# (2.13.0) with PyPI's torchvision 0.28.0 beside it; left to itself LAVIS pulls the CUDA build of
# torch 2.14.1 (6.8 GB, more than some CI machines have free). LAVIS regenerates
# tests/fixtures/lavis_tiny from its own modules, then .venv checks qurelib's converter against it
# (tools/lavis_parity.py, tests/test_lavis.py).
LAVIS_VENV := .venv-lavis
# what LAVIS needs (requirements-lavis.in) resolved once into requirements-lavis.lock, with hashes
# (make lock re-resolves both locks); torch is the CPU wheel on disk
LAVIS_LOCK := requirements-lavis.lock
.PHONY: lavis-parity

# LAVIS writes a fresh fixture under $(RUNS)/lavis_parity (never over the committed one: a check compares,
# it does not edit what it checks against); qurelib is checked against that fresh fixture and against the
# committed one (tests/test_lavis.py). To adopt a fresh fixture: LAVIS_FIXTURE_UPDATE=1.
LAVIS_FRESH := $(RUNS)/lavis_parity/lavis_tiny
lavis-parity: venv $(LAVIS_VENV)/.installed
	rm -rf $(LAVIS_FRESH) && mkdir -p $(dir $(LAVIS_FRESH))
	$(LAVIS_VENV)/bin/python tools/lavis_parity.py generate $(LAVIS_FRESH)
	$(PY) tools/lavis_parity.py check $(LAVIS_FRESH)
	$(PY) -m pytest -q -p no:randomly tests/test_lavis.py
	$(if $(LAVIS_FIXTURE_UPDATE),cp -r $(LAVIS_FRESH)/. tests/fixtures/lavis_tiny/)

$(LAVIS_VENV)/.installed: $(LAVIS_LOCK)
	test -x $(LAVIS_VENV)/bin/python || $(PYTHON) -m venv $(LAVIS_VENV)
	$(LAVIS_VENV)/bin/python -m pip install -q --no-cache-dir --require-hashes --no-deps -r $(LAVIS_LOCK)
	touch $@
