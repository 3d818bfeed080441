# One image for GPU and CPU hosts. It holds the tools (Python 3.11, git, DVC, PyTorch, TensorBoard,
# pytest), installed from the same pinned requirements files that `make setup` uses, and none of the
# project: the checkout is bind-mounted at /workspace at run time and everything runs as your uid,
# so outputs land in your checkout, owned by you. `make help` lists the docker-* targets.
#
#   docker build -t fashion-mnist-dvc .
#   docker run --rm --gpus all -u "$(id -u):$(id -g)" -v "$PWD:/workspace" fashion-mnist-dvc
#   (leave out --gpus all on a host without an NVIDIA GPU; the pipeline then runs on the CPU)
#
# GPU: the default torch wheel is PyPI's torch 2.14.1, built with CUDA 13.0. It bundles the CUDA
# runtime, so the host needs only the NVIDIA driver, version 580.65.06 or newer (the Linux driver
# NVIDIA lists for CUDA 13.0 GA in the CUDA 13.0 release notes; its compatibility guide gives
# ">= 580" for all of CUDA 13.x), and the NVIDIA Container Toolkit for `--gpus`. The same wheel
# runs on the CPU when no GPU is passed in.
#
# Older driver, or no GPU and no wish to download the CUDA libraries (~4 GB)? Pick another
# PyTorch wheel flavour from https://download.pytorch.org/whl/ at build time:
#   docker build --build-arg TORCH_FLAVOUR=cpu -t fashion-mnist-dvc .     # CPU only
#   docker build --build-arg TORCH_FLAVOUR=cu126 -t fashion-mnist-dvc .   # CUDA 12.6, driver >= 525
# requirements.txt still drives the install: its pins of torch and torchvision (`==X.Y.Z`) also
# match PyTorch's local versions (`X.Y.Z+cpu`), so the flavour only adds PyTorch's index
# (TORCH_INDEX_URL, default https://download.pytorch.org/whl/$TORCH_FLAVOUR) as an extra index
# and a constraint pinning those two packages to `+$TORCH_FLAVOUR`. A flavour must exist for this
# torch release on that index. tests/test_docker.py builds and runs the default (plain PyPI)
# image only; the flavour builds are untested.

ARG BASE_IMAGE=python:3.11-slim
# hadolint ignore=DL3006
FROM ${BASE_IMAGE}

# Empty: the plain PyPI wheels (CUDA 13.0). Otherwise a flavour of PyTorch's index: cpu, cu126, ...
ARG TORCH_FLAVOUR=
ARG TORCH_INDEX_URL=

# git for DVC; make so that the test suite's Makefile checks run here too. Debian's stable
# packages, patched in place by the distribution, are left unpinned on purpose.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends git make \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv
ENV PATH="${VIRTUAL_ENV}/bin:${PATH}"

# As `make setup` does: a venv, the current pip, then the requirements files.
COPY requirements.txt requirements-dev.txt /tmp/
# hadolint ignore=DL3013
RUN python3 -m venv "${VIRTUAL_ENV}" \
 && pip install --no-cache-dir --disable-pip-version-check --upgrade pip \
 && set -- \
 && if [ -n "${TORCH_FLAVOUR}" ]; then \
      sed -nE "s/^(torch|torchvision)==([^ ;#]+).*/\\1==\\2+${TORCH_FLAVOUR}/p" /tmp/requirements.txt \
        > /tmp/torch-flavour.txt \
      && set -- --constraint /tmp/torch-flavour.txt \
           --extra-index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/${TORCH_FLAVOUR}}"; \
    fi \
 && PIP_DEFAULT_TIMEOUT=120 PIP_ROOT_USER_ACTION=ignore \
    pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt \
      -r /tmp/requirements-dev.txt "$@" \
 && rm -f /tmp/requirements.txt /tmp/requirements-dev.txt /tmp/torch-flavour.txt \
 && python -c "import torch, torchvision, dvc, tensorboard; print(torch.__version__, torch.version.cuda)"

# Run as any uid, including one with no passwd entry (docker run -u "$(id -u):$(id -g)"):
# - git refuses a repository owned by another uid ("dubious ownership"), which a bind mount often
#   is (rootless runtimes, Docker Desktop): trust the mount point system-wide;
# - HOME, matplotlib's config and DVC's site cache (default /var/tmp/dvc) must be writable by
#   that uid: a world-writable home (sticky bit, like /tmp) outside the mount;
# - Docker adds no passwd entry for that uid, and DVC names its site cache after the user name
#   (getpass.getuser(), which fails without an entry unless LOGNAME or USER is set);
# - `dvc exp run` commits experiments and needs a git identity, which the host's ~/.gitconfig
#   does not bring along: a fallback one system-wide. The repository's own config, or
#   -e GIT_AUTHOR_NAME=... -e GIT_AUTHOR_EMAIL=... (and GIT_COMMITTER_*), take precedence.
# The default user is an unprivileged one, so even without -u nothing is written as root.
RUN git config --system --add safe.directory /workspace \
 && git config --system user.name "fashion-mnist-dvc container" \
 && git config --system user.email "container@fashion-mnist-dvc.invalid" \
 && groupadd --gid 1000 fashion \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /home/fashion --shell /bin/bash fashion \
 && install -d -m 1777 /home/fashion \
 && install -d -o 1000 -g 1000 /workspace
ENV HOME=/home/fashion \
    MPLCONFIGDIR=/home/fashion/.config/matplotlib \
    DVC_SITE_CACHE_DIR=/home/fashion/.cache/dvc-site \
    DVC_NO_ANALYTICS=1 \
    LOGNAME=fashion \
    USER=fashion \
    PYTHONUNBUFFERED=1
USER 1000:1000
WORKDIR /workspace

# TensorBoard: bind 0.0.0.0 inside, publish on the host's loopback only, for example
#   docker run --rm -u "$(id -u):$(id -g)" -v "$PWD:/workspace" -p 127.0.0.1:6006:6006 \
#     fashion-mnist-dvc tensorboard --logdir runs --host 0.0.0.0 --port 6006
EXPOSE 6006

# The default reproduces the pipeline; any other command can be given instead
# (dvc exp run -S lr=0.01, python -m pytest, tensorboard ...).
CMD ["dvc", "repro"]
