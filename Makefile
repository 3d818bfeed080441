# Run `make` or `make help` for the list of targets.
PYTHON ?= python3.11
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 6006
DOCKER ?= docker
IMAGE ?= fashion-mnist-dvc
PYTEST_ARGS ?=

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help setup repro tensorboard test bench clean

help: ## Show this list
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install the pinned dependencies (requirements.txt)

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

repro: setup ## Run the pipeline: dvc repro (set FASHION_MNIST_MIRROR for a local copy of the data)
	dvc repro

tensorboard: setup ## Serve runs/ with TensorBoard on 127.0.0.1:6006 (set HOST, PORT to change)
	tensorboard --logdir runs --host $(HOST) --port $(PORT)

test: setup ## Run the test suite (offline, synthetic data)
	python -m pytest $(PYTEST_ARGS)

clean: ## Remove DVC-cached outputs from the workspace (dvc checkout or dvc repro restores them)
	rm -rf data/fashion-mnist runs models .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
