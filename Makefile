# The two commands of the README: `make report` (the main job) and `make test`.
# Each creates or updates the virtual environment .venv itself when it is missing or stale.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= quick
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# The label-efficiency study (notebook 08) trains 24 runs: its own target, not part of the report.
STUDY_NOTEBOOK := notebooks/08_label_efficiency.ipynb
# Notebook 09 (your own data) is a tutorial that makes no report figure: make test runs it.
TUTORIAL_NOTEBOOKS := notebooks/09_your_own_data.ipynb
REPORT_NOTEBOOKS := $(filter-out $(STUDY_NOTEBOOK) $(TUTORIAL_NOTEBOOKS),$(NOTEBOOKS))

# CamVid: $CAMVID_DIR if set, else the shared read-only copy beside the repository when present,
# else data/CamVid (downloaded on first use).
CAMVID_DIR ?= $(abspath $(firstword $(wildcard ../shared/data/camvid/CamVid)))
export CAMVID_DIR

.PHONY: help setup report study tutorial test lint serve benchmarks release

help:
	@echo "make report   run notebooks 01-07 ($(PROFILE) profile) and store their outputs: figures/, results/, the tables of README and docs/"
	@echo "make study    the label-efficiency study and notebook 08 with its outputs ($(PROFILE) profile; quick: about 1 h)"
	@echo "make tutorial notebook 09 (your own labelled data) executed, its outputs stored"
	@echo "make test     lint, unit tests and the notebooks (smoke profile)"
	@echo "make serve    start the web app on the latest report checkpoint"
	@echo "make release  pack the report's trained models as release files (build/release/) and their manifest"
	@echo "make benchmarks  training throughput, latency, 12 MP photos, web-app load, the report budget, uploads, int8 (prints figures)"

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	# The distribution was called "helpers" before it took the project's name: drop that one.
	$(BIN)/python -m pip uninstall --quiet --yes helpers 2>/dev/null || true
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

# Executes notebooks 01-07 and stores their outputs in them (smoke: in build/smoke/notebooks),
# clean and under 2 MB each; a notebook that fails is left as it was (helpers/notebook_run.py).
# Seconds per notebook, hardware, commit and profile: results/report_run.json.
report: $(STAMP)
	SEG_PROFILE=$(PROFILE) $(BIN)/python -m helpers.notebook_run --profile $(PROFILE) $(REPORT_NOTEBOOKS)
	$(BIN)/python benchmarks/screenshot_webapp.py || echo "no browser: figures/webapp.png not refreshed"
	$(BIN)/python -m helpers.report

# Resumable: an interrupted study continues where it stopped (runs/study/PROFILE/).
study: $(STAMP)
	SEG_PROFILE=$(PROFILE) $(BIN)/python -m helpers.study labels
	SEG_PROFILE=$(PROFILE) $(BIN)/python -m helpers.notebook_run --profile $(PROFILE) \
		--record results/study_notebook_run.json $(STUDY_NOTEBOOK)
	$(BIN)/python -m helpers.report

# Notebook 09 (your own labelled data) executed and stored with its outputs, like the report's.
tutorial: $(STAMP)
	SEG_PROFILE=$(PROFILE) $(BIN)/python -m helpers.notebook_run --profile $(PROFILE) \
		--record results/tutorial_notebook_run.json $(TUTORIAL_NOTEBOOKS)

lint: $(STAMP)
	$(BIN)/ruff check helpers tests benchmarks notebooks

# Passive OpenMP waiting: test processes (pytest, notebook kernels, servers) share 2 cores, and
# spinning threads would starve each other.
test: export OMP_WAIT_POLICY = PASSIVE
test: lint
	$(BIN)/python -m pytest -q tests
	# nbval runs copies without the report's stored outputs (it refuses outputs without counts).
	$(BIN)/python -m helpers.notebook_run --without-outputs build/nbval $(NOTEBOOKS) >/dev/null
	SEG_PROFILE=smoke $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax \
		--nbval-current-env --nbval-cell-timeout=900 $(addprefix build/nbval/,$(notdir $(NOTEBOOKS)))

# The run the notebooks made (beside runs/PROFILE/MODEL when that holds another configuration).
REPORT_RUN = $$($(BIN)/python -m helpers.train --profile $(PROFILE) --where)

# The report's trained models (quick; full where a GPU run made them) as small release files under
# build/release/TAG/ and the package's manifest helpers/released_weights.json; it prints the
# command that publishes them.
release: $(STAMP)
	$(BIN)/python -m helpers.hub pack --profile quick --profile full

serve: $(STAMP)
	$(BIN)/python -m helpers.webapp --checkpoint $(REPORT_RUN)/best.pt

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/train_throughput.py --model mini-unet
	$(BIN)/python benchmarks/train_throughput.py --precisions auto,off
	$(BIN)/python benchmarks/train_throughput.py --model mini-unet --precisions auto,off
	$(BIN)/python benchmarks/inference_latency.py --compile --save
	$(BIN)/python benchmarks/report_budget.py --slower 1.4 --save
	SEG_NATIVE_BF16=0 $(BIN)/python benchmarks/inference_latency.py --compile --save
	OMP_WAIT_POLICY=ACTIVE $(BIN)/python benchmarks/inference_latency.py --compile --save
	$(BIN)/python benchmarks/predict_large_photo.py
	$(BIN)/python benchmarks/load_webapp.py --checkpoint $(REPORT_RUN)/best.pt
	$(BIN)/python benchmarks/upload_memory.py --checkpoint $(REPORT_RUN)/best.pt --save
	$(BIN)/python benchmarks/int8_accuracy.py --checkpoint $(REPORT_RUN)/best.pt --make
	$(BIN)/python benchmarks/int8_speed.py --checkpoint $(REPORT_RUN)/best.pt
	$(BIN)/python -m helpers.report
