# The README's two commands: `make run` (install + default pipeline), `make test` (install + tests).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= all
# torch 2.13.0 is a CPU wheel that this machine keeps in /opt/wheels; elsewhere pip takes it from PyPI.
WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q $(WHEELS) -c requirements.lock

.PHONY: install run test report bench readme-figures dry-run lint clean

$(BIN)/.installed: pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/snakemake --cores $(CORES) --configfile config.yaml

report: install
	$(BIN)/snakemake --cores 1 --configfile config.yaml --report results/report.html

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/optin-bench

# The README's figures: the default arm with both semantics.
readme-figures: install
	$(BIN)/snakemake --cores $(CORES) --configfile config.yaml workflow/configs/with_reference.yaml
	cp results/figures/accuracy_vs_flops.png results/figures/speedup_vs_flops.png docs/

dry-run: install
	$(BIN)/snakemake -n --configfile config.yaml

lint: install
	$(BIN)/snakemake --lint --configfile config.yaml

clean:
	rm -rf results logs benchmarks .snakemake
