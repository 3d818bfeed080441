"""Shared fixtures: a synthetic dataset, and copies of the project as real git + DVC repos."""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fashion import fetch, params, synthetic

ROOT = Path(__file__).resolve().parents[1]
# A developer's FASHION_FILL_UNINITIALIZED=1 (kept to check another PyTorch release) would change
# what the provenance tests expect; the tests that want the fill set it themselves.
os.environ.pop("FASHION_FILL_UNINITIALIZED", None)
# A shell starts a background job (`make test &`, nohup) with Ctrl-C ignored, and a stage run by
# a test would inherit that: the interrupt tests need Ctrl-C to act as in a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)
# What a fresh clone needs to run the pipeline; outputs and the committed baseline stay behind.
PROJECT_FILES = ("fashion", "scripts", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore",
                 ".dvcignore", ".gitignore", "Makefile", "requirements.txt", "requirements-dev.in",
                 "requirements-lock.txt")
# Small enough for seconds per stage: 200 training images, 50 steps of 4, a log every 40 images.
TEST_PARAMS = {"seed": 0, "lr": 0.02, "momentum": 0.9, "batch_size": 4, "epochs": 1,
               "log_every": 40, "embedding_samples": 20, "device": "cpu"}


def write_params(repo: Path, **changes) -> None:
    values = {**TEST_PARAMS, **changes}
    params.write(repo / "params.yaml", values)


def load_script(name: str):
    """scripts/NAME.py imported as a module (its `if __name__ == "__main__"` part not run)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / f"scripts/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args, cwd, env=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {done.returncode}\n"
                             f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return done


def make_dry_run(target: str, *assignments: str, env: dict | None = None) -> list[str]:
    """The command lines `make -n TARGET` prints in the repository root, continuation lines
    joined. The Makefile's own variables are taken out of this environment first, so that a
    developer's HOST or PORT does not leak in; `env` puts some back."""
    scrubbed = {k: v for k, v in os.environ.items()
                if k not in ("HOST", "PORT", "LOGDIR", "TENSORBOARD_FLAGS")}
    done = run(["make", "-s", "-n", target, *assignments], ROOT, {**scrubbed, **(env or {})},
               timeout=30)
    return done.stdout.replace("\\\n", " ").splitlines()


def dvc(repo: Path, env: dict, *args, check=True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], repo, env, check)


def git(repo: Path, *args) -> str:
    return run(["git", *args], repo).stdout


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    """(mirror directory of .gz files, checksum file) of a synthetic dataset."""
    mirror = tmp_path_factory.mktemp("mirror")
    return mirror, synthetic.write(mirror)


@pytest.fixture
def data_dir(tmp_path, dataset):
    """A data directory written by the fetch stage from the synthetic mirror."""
    mirror, checksums = dataset
    fetch.run(dest=tmp_path / "data", mirror=str(mirror), checksums=str(checksums), timeout=1,
              retries=0)
    return tmp_path / "data"


@pytest.fixture(scope="session")
def env(dataset, tmp_path_factory) -> dict:
    """The environment stage commands run in: this interpreter first on PATH, the synthetic data."""
    mirror, checksums = dataset
    home = tmp_path_factory.mktemp("home")
    return {**os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "FASHION_MNIST_MIRROR": str(mirror), "FASHION_MNIST_CHECKSUMS": str(checksums),
            "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"),
            "MPLCONFIGDIR": str(home / "matplotlib"),
            "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def make_repo(path: Path, **changes) -> Path:
    """A git repository holding a copy of the project, committed, with test params."""
    path.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, path / name)
    write_params(path, **changes)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "project")
    return path


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, env) -> Path:
    """A repo in which `dvc repro` has run once on the synthetic data. Tests must not change it."""
    repo = make_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    dvc(repo, env, "repro")
    return repo
