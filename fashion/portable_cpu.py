"""The CPU code paths the computing stages pin, so that every x86-64 CPU with AVX2, Intel's and
AMD's alike, computes the same bits (docs/reproduction.md, "Which machines share the baseline's
bits").

PyTorch picks its CPU kernels by the widest vector instructions the CPU has (AVX-512 or AVX2);
the stages ask for AVX2, which every x86-64 CPU of the last decade has. MKL, PyTorch's matrix
library, picks its kernels by CPU model and vendor; the stages ask for its COMPATIBLE branch, the
one Intel documents as giving the same results on Intel and other x86 CPUs (the AVX2 branch is
Intel-only: AMD CPUs run MKL's own choice instead). That branch has no strict mode, so MKL also
runs on one thread, which keeps its sums in one order whatever the number of cores. Both
libraries read these settings once, at their first computation, so a stage's script calls `pin`
before it imports torch. Torch-free on purpose: the scripts call it before that import.
"""

import os
import platform
from pathlib import Path

from fashion.cli import switch
from fashion.errors import FashionError

SWITCH = "FASHION_PORTABLE_CPU"  # 0 keeps the CPU's own, fastest code paths
ATEN_LEVEL = "avx2"              # PyTorch's ATEN_CPU_CAPABILITY
MKL_BRANCH = "COMPATIBLE"        # MKL's MKL_CBWR branch
# The x86 feature flags (as /proc/cpuinfo names them) that PyTorch needs for each kernel width.
LEVELS = (("avx512", {"avx512f", "avx512bw", "avx512dq", "avx512vl", "fma"}),
          ("avx2", {"avx2", "fma"}))


def own_capability() -> str | None:
    """The widest kernels PyTorch could use on this CPU: 'avx512', 'avx2' or 'default' (narrower
    x86-64); None where the CPU is not x86-64 or its flags cannot be read (macOS, Windows)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return next((name for name, needs in LEVELS if needs <= flags), "default")
    return None


def wanted() -> bool:
    """Whether the pin applies: on unless FASHION_PORTABLE_CPU=0, on CPUs that have AVX2.
    Elsewhere (ARM, an older x86) there is no AVX2 path to pin, and the CPU's own is kept."""
    return switch(SWITCH, default=True) and own_capability() in ("avx2", "avx512")


def mkl_cbwr(threaded: bool) -> str:
    """MKL's reproducibility setting: the pinned branch when the pin applies (MKL on one thread);
    else the CPU's own (AUTO), strict where a stage runs MKL on several threads, so that their
    number does not change the sums (determinism.threaded_matrix_products)."""
    if wanted():
        return MKL_BRANCH
    return "AUTO,STRICT" if threaded else "AUTO"


def pin() -> None:
    """Set PyTorch's and MKL's code paths for this process and its children; nothing when
    FASHION_PORTABLE_CPU=0 or the CPU has no AVX2. Must run before torch computes anything.

    A bad value of the switch is left for the stage to refuse in one line (determinism.configure
    reads it again), since this runs before the stage's error handling.
    """
    try:
        if not wanted():
            return
    except FashionError:
        return
    os.environ["ATEN_CPU_CAPABILITY"] = ATEN_LEVEL
    os.environ["MKL_CBWR"] = MKL_BRANCH
    # MKL's matrix products on one thread; PyTorch's own kernels keep every core, which they
    # would not under MKL_NUM_THREADS (PyTorch reads that as its own thread count too).
    os.environ["MKL_DOMAIN_NUM_THREADS"] = "MKL_DOMAIN_BLAS=1"
