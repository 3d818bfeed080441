# Run `make` or `make help` for the list of targets.
PYTHON ?= python3.11
VENV ?= .venv
# Plain `=`: an exported HOST (some shells and images set one) must not open TensorBoard to the
# network; only `make tensorboard HOST=...` on the command line overrides these.
HOST = 127.0.0.1
PORT = 6006
LOGDIR = runs
# TensorBoard keeps 10 images per tag unless told otherwise, and a default run logs 15 figures.
TENSORBOARD_FLAGS ?= --samples_per_plugin images=1000
DOCKER ?= docker
IMAGE ?= fashion-mnist-dvc
PYTEST_ARGS ?=

export PATH := $(abspath $(VENV))/bin:$(PATH)
# Every package setup and the image install, hash-pinned; `make lock` writes it from the two lists.
LOCK := requirements-lock.txt
LOCK_ARGS ?=
STAMP := $(VENV)/.installed-$(shell cksum < $(LOCK) | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help setup lock repro verify tensorboard tensorboard-exps compare baseline report test \
	bench bench-quick gpu-check mutation clean

# Target names in colour on a terminal; plain text into a pipe or a file.
help: ## Show this list
	@on=; off=; if [ -t 1 ]; then on=$$(printf '\033[36m'); off=$$(printf '\033[0m'); fi; \
	grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "}; {printf "  %s%-20s%s %s\n", on, $$1, off, $$2}'

setup: $(STAMP) ## Create .venv holding exactly the lock, requirements-lock.txt (hash-checked)

# The stamp's name holds a checksum of the lock, so a new lock reinstalls and a checkout that only
# touches the file does not. --clear starts from an empty venv, so nothing the lock left out stays.
$(STAMP):
	$(PYTHON) -m venv --clear $(VENV)
	$(VENV)/bin/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	touch $@

lock: $(STAMP) ## Rewrite requirements-lock.txt from requirements.txt and requirements-dev.in (LOCK_ARGS=--upgrade: newest)
	uv pip compile requirements-dev.in --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 --custom-compile-command 'make lock' --quiet -o $(LOCK) $(LOCK_ARGS)

repro: setup ## Run the pipeline: dvc repro (set FASHION_MNIST_MIRROR for a local copy of the data)
	dvc repro

verify: setup ## Compare the workspace's outputs with HEAD's baseline, bit for bit (TOLERANCE=x accepts metric deltas up to x)
	python scripts/verify.py $(if $(TOLERANCE),--tolerance $(TOLERANCE))

tensorboard: setup ## Serve runs/ with TensorBoard on 127.0.0.1:6006 (set LOGDIR, HOST, PORT to change)
	@find "$(LOGDIR)" -name 'events.out.tfevents.*' 2>/dev/null | grep -q . || echo "Note: \
	$(LOGDIR) holds no TensorBoard logs yet; \`make repro\` or \`dvc pull\` writes them." >&2
	tensorboard --logdir "$(LOGDIR)" --host $(HOST) --port $(PORT) $(TENSORBOARD_FLAGS)

tensorboard-exps: setup ## Serve every DVC experiment's logs side by side, a run per experiment
	python scripts/tensorboard_exps.py --host $(HOST) --port $(PORT) -- $(TENSORBOARD_FLAGS)

compare: setup ## Table of HEAD's results and every experiment, best test accuracy first (ALL=1: every param)
	python scripts/compare.py $(if $(ALL),--all)

baseline: setup ## Return params.yaml, dvc.lock, metrics and outputs to HEAD's; code edits stay
	python scripts/baseline.py

report: setup ## Write reports/experiments.html: the compare table and every experiment's curves, offline
	python scripts/report.py

test: setup ## Run the test suite (offline, synthetic data)
	python -m pytest $(PYTEST_ARGS)

bench: setup ## Time the tutorial against the stages on the fetched data (about 2 minutes on 2 cores)
	python scripts/bench.py --json bench-results/$(shell date +%Y%m%d-%H%M%S).json $(BENCH_ARGS)

bench-quick: setup ## Check that the benchmark runs: 1,200 generated training images
	python scripts/bench.py --quick

mutation: setup ## Mutation testing of the core modules against the fast tests: score and survivors (docs/testing.md)
	python scripts/mutation.py $(MUTATION_ARGS)

gpu-check: setup ## On a GPU machine: CUDA tests, the benchmark on CUDA, two train runs compared byte for byte
	python benchmarks/gpu_check.py

# The cached outputs of dvc.yaml's stages (tests/test_project.py keeps the two lists equal).
PIPELINE_OUTS = data/fashion-mnist runs/visualize models/model.pt runs/train plots/train_loss.csv \
	runs/evaluate plots/confusion.csv plots/pr

clean: ## Remove the pipeline's cached outputs from the workspace (dvc checkout restores them)
	rm -rf $(PIPELINE_OUTS) .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

# ---- Docker -------------------------------------------------------------------------------------
# One image for GPU and CPU hosts (see Dockerfile and docs/docker.md). It carries the project, so
# `docker run IMAGE` reproduces the pipeline with nothing mounted; the docker-* targets below mount
# this checkout at /workspace instead (it takes precedence) and run as your uid, so everything the
# container writes there belongs to you. Variables:
#   TORCH_FLAVOUR      PyTorch wheel flavour for docker-build: empty = the lock (PyPI's CUDA 13.0
#                      build, driver >= 580.65.06), cpu = CPU only, cu126 = CUDA 12.6, ... (unlocked)
#   DOCKER_BUILD_ARGS  anything else for `docker build` (a package mirror: see docs/docker.md)
#   DOCKER_GPUS        default `--gpus all` when `nvidia-smi -L` works on this host, else empty
#                      (needs the NVIDIA Container Toolkit; podman with CDI:
#                      DOCKER_GPUS='--device nvidia.com/gpu=all'; DOCKER_GPUS= forces the CPU)
#   DOCKER_USER        uid:gid inside the container, default yours (rootless Docker: 0:0, which
#                      is you on the host)
#   DOCKER_USERNS      default --userns=keep-id under rootless podman (so your uid stays yours)
#   DOCKER_RUN_ARGS    anything else for `docker run`
# FASHION_MNIST_MIRROR and FASHION_MNIST_CHECKSUMS pass through, local paths in them mounted
# read-only (scripts/docker_data.py).
TORCH_FLAVOUR ?=
DOCKER_BUILD_ARGS ?=
DOCKER_GPUS ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo '--gpus all')
DOCKER_USER ?= $(shell id -u):$(shell id -g)
DOCKER_USERNS ?= $(shell $(DOCKER) info --format '{{.Host.Security.Rootless}}' 2>/dev/null | \
	grep -qx true && echo --userns=keep-id)
DOCKER_RUN_ARGS ?=
# The commit the image is built from, for its label and its own commit message; "-dirty" when the
# checkout holds edits or untracked files, which go into the image too; "unknown" outside git.
SOURCE_COMMIT = $(or $(shell git rev-parse -q --verify HEAD 2>/dev/null),unknown)$(if $(shell \
	git status --porcelain 2>/dev/null),-dirty)
DOCKER_DATA = $(if $(FASHION_MNIST_MIRROR)$(FASHION_MNIST_CHECKSUMS),$(shell python scripts/docker_data.py \
	--mirror '$(FASHION_MNIST_MIRROR)' --checksums '$(FASHION_MNIST_CHECKSUMS)'))
DOCKER_RUN = $(DOCKER) run --rm -u "$(DOCKER_USER)" $(DOCKER_USERNS) -v "$(CURDIR):/workspace" \
	$(DOCKER_DATA) $(DOCKER_RUN_ARGS)
.PHONY: docker-build docker-repro docker-test docker-tensorboard

docker-build: ## Build the Docker image IMAGE, the project in it (TORCH_FLAVOUR=cpu for a CPU-only PyTorch)
	$(DOCKER) build --build-arg TORCH_FLAVOUR=$(TORCH_FLAVOUR) --build-arg SOURCE_COMMIT=$(SOURCE_COMMIT) \
		$(DOCKER_BUILD_ARGS) -t $(IMAGE) .

docker-repro: ## Run dvc repro in the image on this checkout, with the GPU when there is one
	$(DOCKER_RUN) $(DOCKER_GPUS) $(IMAGE) dvc repro

docker-test: ## Run the test suite in the image on this checkout, as your uid (PYTEST_ARGS)
	$(DOCKER_RUN) $(IMAGE) python -m pytest $(PYTEST_ARGS)

docker-tensorboard: ## Serve runs/ with TensorBoard from the image on 127.0.0.1:6006 (set HOST, PORT, LOGDIR in the checkout)
	@echo "TensorBoard on http://$(HOST):$(PORT) (it binds 0.0.0.0:6006 inside the container); Ctrl-C stops it"
	$(DOCKER_RUN) -p "$(HOST):$(PORT):6006" $(IMAGE) tensorboard --logdir "$(LOGDIR)" --host 0.0.0.0 \
		--port 6006 $(TENSORBOARD_FLAGS)
# ---- end of Docker ------------------------------------------------------------------------------
