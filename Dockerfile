# One image for GPU and CPU hosts, and the research artifact: it holds the tools (Python 3.11, git,
# and every package of requirements-lock.txt, hash-checked, in a venv on PATH) and the project
# itself (code, params, dvc.yaml, dvc.lock, the committed metrics) as a git repository at
# /workspace, so with nothing mounted it reproduces the pipeline and ends with the verdict:
#
#   docker build -t fashion-mnist-dvc .
#   docker run --rm --gpus all fashion-mnist-dvc        # leave out --gpus all without an NVIDIA GPU
#
# A checkout bind-mounted at /workspace hides the image's copy and is used instead, as your uid:
#   docker run --rm -u "$(id -u):$(id -g)" -v "$PWD:/workspace" fashion-mnist-dvc
# docs/docker.md has the rest: GPU drivers, flavours, a local mirror of the data, `make docker-*`.
#
# GPU: the pinned torch 2.14.1 is PyPI's build with CUDA 13.0. It bundles the CUDA runtime, so the
# host needs only the NVIDIA driver, version 580.65.06 or newer (the Linux driver NVIDIA lists for
# CUDA 13.0 GA in the CUDA 13.0 release notes; its compatibility guide gives ">= 580" for all of
# CUDA 13.x), and the NVIDIA Container Toolkit for `--gpus`. The same wheel runs on the CPU.
#
# Older driver, or no wish to download the CUDA libraries (~4 GB)? Pick another PyTorch wheel
# flavour from https://download.pytorch.org/whl/ at build time:
#   docker build --build-arg TORCH_FLAVOUR=cpu -t fashion-mnist-dvc .     # CPU only
#   docker build --build-arg TORCH_FLAVOUR=cu126 -t fashion-mnist-dvc .   # CUDA 12.6, driver >= 525
# Such an image is not locked: it installs the direct pins of requirements.txt and
# requirements-dev.in, torch and torchvision as `X.Y.Z+$TORCH_FLAVOUR` from PyPI's index plus
# PyTorch's (TORCH_INDEX_URL, default https://download.pytorch.org/whl/$TORCH_FLAVOUR), and the
# rest as resolved on the day. tests/test_docker.py builds and runs the locked image only.

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

# pip's own settings for a package mirror, e.g. --build-arg PIP_INDEX_URL=https://mirror/simple
# (the lock's hashes still decide what is accepted). No credentials in them: build arguments stay
# in the image's history.
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_FIND_LINKS=

# As `make setup` does: exactly the lock, hash-checked, pip itself included, with the same stamp.
COPY requirements.txt requirements-dev.in requirements-lock.txt /tmp/
# hadolint ignore=DL3013,DL3042
RUN python3 -m venv "${VIRTUAL_ENV}" \
 && export PIP_DEFAULT_TIMEOUT=120 PIP_ROOT_USER_ACTION=ignore PIP_NO_CACHE_DIR=1 \
      PIP_DISABLE_PIP_VERSION_CHECK=1 \
 && if [ -z "${TORCH_FLAVOUR}" ]; then \
      pip install --require-hashes --no-deps -r /tmp/requirements-lock.txt \
      && sum="$(cksum < /tmp/requirements-lock.txt)" && touch "${VIRTUAL_ENV}/.installed-${sum%% *}"; \
    else \
      sed -nE "s/^(torch|torchvision)==([^ ;#]+).*/\\1==\\2+${TORCH_FLAVOUR}/p" /tmp/requirements.txt \
        > /tmp/torch-flavour.txt \
      && pip install -r /tmp/requirements-dev.in --constraint /tmp/torch-flavour.txt \
           --extra-index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/${TORCH_FLAVOUR}}"; \
    fi \
 && rm -f /tmp/requirements.txt /tmp/requirements-dev.in /tmp/requirements-lock.txt /tmp/torch-flavour.txt \
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

# The project last, so that an edit to it rebuilds only these layers. Its git repository is made
# here, one commit of what the build context holds (.dockerignore leaves out .git, caches, the
# pipeline's outputs and what git ignores): HEAD's dvc.lock and metrics/ are the baseline the verdict compares with,
# `git status` starts clean, and no history, remote or local git config of the builder's clone
# comes along. SOURCE_COMMIT (make docker-build passes it) names the commit it was built from,
# with "-dirty" when the checkout held edits or untracked files.
COPY --chown=1000:1000 . /workspace
ARG SOURCE_COMMIT=unknown
LABEL org.opencontainers.image.revision="${SOURCE_COMMIT}"
RUN git init -q -b main \
 && git add -A \
 && git commit -q -m "fashion-mnist-dvc, built from commit ${SOURCE_COMMIT}" \
 && chmod -R a+rwX /workspace

# TensorBoard: bind 0.0.0.0 inside, publish on the host's loopback only, for example
#   docker run --rm -u "$(id -u):$(id -g)" -v "$PWD:/workspace" -p 127.0.0.1:6006:6006 \
#     fashion-mnist-dvc tensorboard --logdir runs --host 0.0.0.0 --port 6006
EXPOSE 6006

# The default reproduces the pipeline and ends with the verdict against the committed baseline;
# any other command can be given instead (dvc exp run -S lr=0.01, python -m pytest, tensorboard ...).
CMD ["sh", "-c", "dvc repro && python scripts/verify.py"]
