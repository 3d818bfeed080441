"""What a run records beside its metrics, in two files.

The record (a DVC metric, committed) holds what decides the output bits: params and data hashes,
the versions of the libraries that compute or encode the outputs, the device kind, and the
determinism switches. Two hosts that give the same bits write the same record, so a reproduction
leaves `git status` clean. The host record (a gitignored side file, next to it) holds what only
names the machine: CPU model, full Python version, thread count, and the commit the run started
from. docs/reproduction.md says why each field is where it is.
"""

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from fashion import determinism, fileio, portable_cpu
from fashion.data import MANIFEST, read_checksums

# The project's code and pins, a superset of what any one stage depends on (dvc.lock holds that,
# file by file): an edit to scripts/bench.py also counts as changed code here.
CODE = ("fashion", "scripts", "dvc.yaml", "requirements.txt")
# The libraries, besides torch, whose version can change an output's bytes (requirements.txt).
LIBRARIES = ("numpy", "matplotlib", "pillow", "protobuf", "tensorboard")
HOST_SUFFIX = ".host.json"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def params_sha256(params: dict) -> str:
    """The hash of the params' values, whatever order the keys came in."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def record(device: torch.device, params: dict, data_dir: str | Path) -> dict:
    """What decides the bits: equal on every host that gives the same outputs."""
    cuda = device.type == "cuda"
    return {
        "params_sha256": params_sha256(params),
        "data_sha256": read_checksums(Path(data_dir) / MANIFEST),
        "system": platform.system(),
        "machine": platform.machine(),
        # The minor version, not the patch: 3.11.2 and 3.11.7 gave the same bits.
        "python": ".".join(platform.python_version_tuple()[:2]),
        "torch": torch.__version__,  # with its build: +cpu, +cu130
        **{name: metadata.version(name) for name in LIBRARIES},
        "device": device.type,
        # A GPU model picks its own kernels; a CPU's code paths are pinned (determinism.flags).
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        **determinism.flags(),
    }


def host(record_bytes: bytes) -> dict:
    """What names the machine without deciding the bits; never the hostname."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", *CODE)
    return {
        # Which record this describes: DVC may later restore a record from its cache that another
        # run wrote, and then this file does not belong to it.
        "record_sha256": hashlib.sha256(record_bytes).hexdigest(),
        "cpu": cpu_name(),
        # The widest kernels this CPU has: what an unpinned run would take (determinism.flags).
        "cpu_capability": portable_cpu.own_capability(),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        # The commit the run started from: right here, unlike in a committed record, which can
        # never name the commit that contains it.
        "git_commit": _git("rev-parse", "HEAD"),
        # True when tracked code differs from that commit (dvc.lock holds the exact code hashes).
        "git_code_changed": None if status is None else bool(status),
    }


def host_path(record_path: str | Path) -> Path:
    """metrics/provenance/train.json -> metrics/provenance/train.host.json"""
    path = Path(record_path)
    return path.with_name(path.stem + HOST_SUFFIX)


def write(out: fileio.Outputs, record_path: str | Path, device: torch.device, params: dict,
          data_dir: str | Path) -> None:
    """Stage the record and its host record with the stage's other outputs."""
    data = fileio.json_bytes(record(device, params, data_dir))
    out.file(record_path, data)
    out.file(host_path(record_path), fileio.json_bytes(host(data)))


def read_host(record_path: str | Path) -> dict | None:
    """The host record of the record at record_path, or None where there is none that belongs to
    the record there now."""
    try:
        data = Path(record_path).read_bytes()
        found = json.loads(host_path(record_path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("record_sha256") != hashlib.sha256(data).hexdigest():
        return None
    return found
