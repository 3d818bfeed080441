"""What a run records beside its metrics: code, params, data, software and hardware."""

import hashlib
import json
import platform
import subprocess
from pathlib import Path

import torch

from fashion import determinism
from fashion.data import MANIFEST, read_checksums

# The project's code and pins, a superset of what any one stage depends on (dvc.lock holds that,
# file by file): an edit to scripts/bench.py also counts as changed code here.
CODE = ("fashion", "scripts", "dvc.yaml", "requirements.txt")


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


def record(device: torch.device, params: dict, data_dir: str | Path) -> dict:
    cuda = device.type == "cuda"
    status = _git("status", "--porcelain", "--untracked-files=no", "--", *CODE)
    manifest = Path(data_dir) / MANIFEST
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        # True when tracked code differs from that commit (dvc.lock holds the exact code hashes).
        "git_code_changed": None if status is None else bool(status),
        "params_sha256": hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest(),
        "data_sha256": read_checksums(manifest),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "threads": torch.get_num_threads(),
        **determinism.flags(),
    }
