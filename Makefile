# Run `make` or `make help` for the list of targets.
PYTHON ?= python3.11
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 6006
LOGDIR ?= runs
# TensorBoard keeps 10 images per tag unless told otherwise, and a default run logs 15 figures.
TENSORBOARD_FLAGS ?= --samples_per_plugin images=1000
DOCKER ?= docker
IMAGE ?= fashion-mnist-dvc
PYTEST_ARGS ?=

export PATH := $(abspath $(VENV))/bin:$(PATH)
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help setup repro tensorboard tensorboard-exps test bench bench-quick gpu-check mutation clean

# Target names in colour on a terminal; plain text into a pipe or a file.
help: ## Show this list
	@on=; off=; if [ -t 1 ]; then on=$$(printf '\033[36m'); off=$$(printf '\033[0m'); fi; \
	grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "}; {printf "  %s%-20s%s %s\n", on, $$1, off, $$2}'

setup: $(STAMP) ## Create .venv and install the pinned dependencies (requirements*.txt)

# The stamp's name holds a checksum of the pins, so a change of pins reinstalls; a checkout that
# only touches the files (same pins) does not.
$(STAMP):
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

repro: setup ## Run the pipeline: dvc repro (set FASHION_MNIST_MIRROR for a local copy of the data)
	dvc repro

tensorboard: setup ## Serve runs/ with TensorBoard on 127.0.0.1:6006 (set LOGDIR, HOST, PORT to change)
	@find "$(LOGDIR)" -name 'events.out.tfevents.*' 2>/dev/null | grep -q . || echo "Note: \
	$(LOGDIR) holds no TensorBoard logs yet; \`make repro\` or \`dvc pull\` writes them." >&2
	tensorboard --logdir "$(LOGDIR)" --host $(HOST) --port $(PORT) $(TENSORBOARD_FLAGS)

tensorboard-exps: setup ## Serve every DVC experiment's logs side by side, a run per experiment
	python scripts/tensorboard_exps.py --host $(HOST) --port $(PORT) -- $(TENSORBOARD_FLAGS)

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
# One image for GPU and CPU hosts (see Dockerfile). The checkout is bind-mounted at /workspace and
# the container runs as your uid, so everything it writes there belongs to you. Variables:
#   TORCH_FLAVOUR      PyTorch wheel flavour for docker-build: empty = PyPI's CUDA 13.0 build
#                      (driver >= 580.65.06), cpu = CPU only, cu126 = CUDA 12.6, ...
#   DOCKER_GPUS        default `--gpus all` when `nvidia-smi -L` works on this host, else empty
#                      (needs the NVIDIA Container Toolkit; podman with CDI:
#                      DOCKER_GPUS='--device nvidia.com/gpu=all'; DOCKER_GPUS= forces the CPU)
#   DOCKER_USER        uid:gid inside the container, default yours (rootless Docker: 0:0, which
#                      is you on the host)
#   DOCKER_USERNS      default --userns=keep-id under rootless podman (so your uid stays yours)
#   DOCKER_RUN_ARGS    anything else for `docker run`
# FASHION_MNIST_MIRROR and FASHION_MNIST_CHECKSUMS pass through: local directories in the mirror
# list (plain or file://) and the checksum file are mounted read-only at their absolute host
# paths, and the variables are rewritten to those paths (relative paths work too).
TORCH_FLAVOUR ?=
DOCKER_GPUS ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo '--gpus all')
DOCKER_USER ?= $(shell id -u):$(shell id -g)
DOCKER_USERNS ?= $(shell $(DOCKER) info --format '{{.Host.Security.Rootless}}' 2>/dev/null | \
	grep -qx true && echo --userns=keep-id)
DOCKER_RUN_ARGS ?=
DOCKER_DATA = $(shell \
	mirror='$(FASHION_MNIST_MIRROR)'; checksums='$(FASHION_MNIST_CHECKSUMS)'; list=; mounted='|'; \
	IFS=,; for item in $$mirror; do \
	  item=$$(printf '%s' "$$item" | sed 's/^ *//; s/ *$$//'); \
	  path=$$(printf '%s' "$$item" | sed 's|^file://||'); \
	  if [ -n "$$item" ] && [ -d "$$path" ]; then \
	    path=$$(cd "$$path" && pwd -P); \
	    case $$mounted in (*"|$$path|"*) ;; (*) printf " -v '%s:%s:ro'" "$$path" "$$path"; \
	      mounted="$$mounted$$path|";; esac; \
	    case $$item in (file://*) item=file://$$path;; (*) item=$$path;; esac; \
	  fi; \
	  list=$${list:+$$list,}$$item; \
	done; \
	[ -z "$$list" ] || printf " -e 'FASHION_MNIST_MIRROR=%s'" "$$list"; \
	if [ -f "$$checksums" ]; then \
	  dir=$$(cd "$$(dirname "$$checksums")" && pwd -P); checksums=$$dir/$$(basename "$$checksums"); \
	  case $$mounted in (*"|$$dir|"*) ;; (*) printf " -v '%s:%s:ro'" "$$checksums" "$$checksums";; esac; \
	fi; \
	[ -z "$$checksums" ] || printf " -e 'FASHION_MNIST_CHECKSUMS=%s'" "$$checksums")
DOCKER_RUN = $(DOCKER) run --rm -u "$(DOCKER_USER)" $(DOCKER_USERNS) -v "$(CURDIR):/workspace" \
	$(DOCKER_DATA) $(DOCKER_RUN_ARGS)
.PHONY: docker-build docker-repro docker-test docker-tensorboard

docker-build: ## Build the Docker image IMAGE (TORCH_FLAVOUR=cpu for a CPU-only PyTorch)
	$(DOCKER) build --build-arg TORCH_FLAVOUR=$(TORCH_FLAVOUR) -t $(IMAGE) .

docker-repro: ## Run dvc repro in the image on this checkout, with the GPU when there is one
	$(DOCKER_RUN) $(DOCKER_GPUS) $(IMAGE) dvc repro

docker-test: ## Run the test suite in the image on this checkout, as your uid (PYTEST_ARGS)
	$(DOCKER_RUN) $(IMAGE) python -m pytest $(PYTEST_ARGS)

docker-tensorboard: ## Serve runs/ with TensorBoard from the image on 127.0.0.1:6006 (set HOST, PORT, LOGDIR in the checkout)
	@echo "TensorBoard on http://$(HOST):$(PORT) (it binds 0.0.0.0:6006 inside the container); Ctrl-C stops it"
	$(DOCKER_RUN) -p "$(HOST):$(PORT):6006" $(IMAGE) tensorboard --logdir "$(LOGDIR)" --host 0.0.0.0 \
		--port 6006 $(TENSORBOARD_FLAGS)
# ---- end of Docker ------------------------------------------------------------------------------
