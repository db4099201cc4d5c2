# Two-command quick start: `make run` and `make test` (both create/update .venv themselves).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= conf/synthetic_shenzhen.yaml
PYTEST_ARGS ?=
# `make run` ends with a quick HGCN-vs-baselines table (the full 14-variant, 30-split ablation:
# `landuse run ablation --config CONFIG`)
QUICK_ABLATION ?= training.variants=[None,GCN_adj,GCN_dd,Adj-Tri-GCN] training.splits=5
export DO_NOT_TRACK := true
export SCARF_NO_ANALYTICS := true
export MLFLOW_DISABLE_TELEMETRY := true
export PIP_DISABLE_PIP_VERSION_CHECK := 1
JAVA := $(if $(JAVA_HOME),$(JAVA_HOME)/bin/java,java)

.PHONY: run test lint venv jars java-check bench clean help nyc tracts dist bundle
help:
	@echo "make run   - set up .venv, generate the synthetic city if absent, run every pipeline stage"
	@echo "make test  - set up .venv, lint (ruff, mypy), run the test suite"
	@echo "make nyc   - real Manhattan data: every stage, the 14-variant ablation and the fusion table"
	@echo "make tracts - real NYC census tracts: every stage, then the published land-use benchmark"
	@echo "make jars  - fetch the JVM jars (Sedona, Delta Lake, hadoop-aws) from Maven Central into jvm/jars (once)"
	@echo "make bench - run the benchmarks in benchmarks/"
	@echo "make clean - remove work/ outputs (keeps .venv)"
	@echo "make dist  - dist/landuse-<version>-py3-none-any.whl and dist/landuse-<version>.zip (--py-files); docs/cluster.md"
	@echo "make stage-STAGE - one stage of the DAG, e.g. make stage-flows (stages: .venv/bin/landuse stages)"
	@echo "make until-STAGE - a stage and everything it depends on, e.g. make until-report (every step)"
	@echo "make bundle - regenerate deploy/databricks/databricks.yml from the DAG for CONFIG"

venv: $(STAMP)

# torch==2.13.0 goes first (PyPI's build, with its CUDA wheels; it runs on the CPU), so nothing else picks it. petastorm is
# installed --no-deps afterwards: its setuptools<70 pin and torch's setuptools>=77 cannot share one
# resolver pass (docs/architecture.md), and petastorm works with the newer setuptools.
$(STAMP): requirements.txt constraints.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; landuse needs Python 3.11 (set PYTHON=/path/to/python3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=77' wheel
	$(BIN)/pip install -q torch==2.13.0 -c constraints.txt
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps petastorm==0.13.1
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# JVM jars from Maven Central (jvm/pom.xml), fetched once at install time, never at run time. Without
# Maven (or its network) the product still runs: builtin spatial engine, Parquet tables, no s3a://.
JARS_STAMP := jvm/jars/.fetched
jars: $(JARS_STAMP)
$(JARS_STAMP): jvm/pom.xml
	@if command -v mvn >/dev/null 2>&1; then \
	  mvn -q -B -f jvm/pom.xml dependency:copy && touch $@ && ls jvm/jars; \
	else echo "notice: mvn not found: no Sedona/Delta/hadoop-aws jars (builtin engine, Parquet tables). Fix: sudo apt-get install -y maven; make jars"; fi

java-check:
	@v=$$($(JAVA) -version 2>&1 | awk -F'"' '/version/ {print $$2; exit}'); \
	if [ -z "$$v" ]; then echo "error: Java not found. Spark 3.5 needs Java 17 (or 8/11). Fix: sudo apt-get install -y openjdk-17-jre-headless (or set JAVA_HOME)"; exit 1; fi; \
	m=$$(echo "$$v" | awk -F. '{print ($$1==1)?$$2:$$1}'); \
	case "$$m" in 8|11|17) ;; *) echo "error: Java $$v found, but Spark 3.5 needs Java 17 (or 8/11). Fix: install openjdk-17 and set JAVA_HOME to it"; exit 1;; esac

run: venv jars java-check
	$(BIN)/landuse pipeline --config $(CONFIG)
	$(BIN)/landuse run ablation --config $(CONFIG) $(QUICK_ABLATION)

# Real data (../shared/data/nyc_manhattan): every stage, then the full ablation and fusion tables.
nyc: venv jars java-check
	$(BIN)/landuse pipeline --config conf/nyc_manhattan.yaml
	$(BIN)/landuse run ablation --config conf/nyc_manhattan.yaml training.progress=false
	$(BIN)/landuse run fusion --config conf/nyc_manhattan.yaml training.progress=false

# Real data, all NYC census tracts: every stage, then benchmark-landuse (README "Land-use benchmark").
tracts: venv jars java-check
	$(BIN)/landuse pipeline --config conf/nyc_tracts.yaml
	$(BIN)/landuse run benchmark-landuse --config conf/nyc_tracts.yaml training.progress=false

# The stage targets come from the DAG (landuse.stages.STAGES): the CLI resolves and checks the name.
stage-%: venv jars java-check
	$(BIN)/landuse run $* --config $(CONFIG)

until-%: venv jars java-check
	$(BIN)/landuse pipeline --until $* --config $(CONFIG)

bundle: venv
	$(BIN)/landuse bundle --config $(CONFIG)

test: venv jars java-check lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff's rules (pyproject.toml): errors and likely bugs (pyflakes, pycodestyle errors, bugbear);
# then mypy over src/landuse ([tool.mypy] in pyproject.toml)
lint: venv
	$(BIN)/ruff check
	$(BIN)/mypy

# pretrain_probe reads the default city's tables: build them first (unchanged stages are skipped)
bench: venv jars java-check
	$(BIN)/landuse pipeline --config conf/synthetic_shenzhen.yaml
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf work

# Cluster packaging (docs/cluster.md): the wheel (pip / Databricks library) and a zip of the package
# tree for `spark-submit --py-files`. Jobs (jobs/*.py) and configs (conf/) stay in the checkout.
DIST_DIR ?= dist
DIST_VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/landuse/__init__.py)
dist: venv
	@test -n "$(DIST_VERSION)" || { echo "error: no __version__ in src/landuse/__init__.py"; exit 1; }
	@mkdir -p $(DIST_DIR)
	rm -rf $(DIST_DIR)/landuse-$(DIST_VERSION)-py3-none-any.whl $(DIST_DIR)/landuse-$(DIST_VERSION).zip build
	$(BIN)/pip wheel -q --no-deps --no-build-isolation . -w $(DIST_DIR)
	rm -rf build
	cd src && $(CURDIR)/$(BIN)/python -c 'import sys, zipfile, pathlib; z = zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED); [z.write(p) for p in sorted(pathlib.Path("landuse").rglob("*")) if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]; z.close()' $(abspath $(DIST_DIR))/landuse-$(DIST_VERSION).zip
	@ls -l $(DIST_DIR)/landuse-$(DIST_VERSION)-py3-none-any.whl $(DIST_DIR)/landuse-$(DIST_VERSION).zip
