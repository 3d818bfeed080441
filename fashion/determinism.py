"""Seeds, device choice and the switches that make a run repeat bit for bit."""

import hashlib
import os

import torch

from fashion import portable_cpu
from fashion.cli import switch
from fashion.errors import ParamsError


def derived_seed(seed: int, purpose: str) -> int:
    """The seed of one purpose's stream ('init', 'batch-order', 'embedding').

    Each purpose gets its own stream, so adding a draw for one purpose never shifts another's.
    """
    digest = hashlib.sha256(f"{seed}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # manual_seed takes 63 bits without complaint


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU generator for one purpose. Batch order is drawn on the CPU on every device, so a GPU
    run sees the same mini-batches as a CPU run."""
    return torch.Generator().manual_seed(derived_seed(seed, purpose))


def configure(device: str) -> torch.device:
    """Resolve 'auto' | 'cpu' | 'cuda' and switch every nondeterministic path off."""
    # The script pinned the CPU code paths before torch loaded (portable_cpu.pin), passing over a
    # bad FASHION_PORTABLE_CPU; here the stage refuses it in one line.
    portable_cpu.wanted()
    # cuBLAS reads this when CUDA starts, so it must be set before the first CUDA call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # The switch behind torch.use_deterministic_algorithms(True), which also imports
    # torch._inductor to set a torch.compile flag: a second per process, for a compiler that this
    # pipeline never uses. torch.are_deterministic_algorithms_enabled() reads the same switch.
    torch._C._set_deterministic_algorithms(True)
    # Under that switch PyTorch also fills the memory of every tensor made empty (torch.empty and
    # the like, which kernels also use for outputs and work buffers) with NaN, integers with their
    # largest value, so that a kernel reading memory it never wrote gives the same result each
    # run. No kernel this pipeline calls does, and PyTorch's documentation allows the fill off for
    # such a program, and it slows every training step on the CPU and the GPU
    # (docs/performance.md). FASHION_FILL_UNINITIALIZED=1 keeps it, to check another PyTorch: no output may
    # change (tests/test_reproduction.py checks this one).
    torch.utils.deterministic.fill_uninitialized_memory = switch(
        "FASHION_FILL_UNINITIALIZED", default=False)
    torch.backends.cudnn.benchmark = False
    # Full fp32 on the GPU, as on the CPU: cuDNN would run fp32 convolutions as TF32 on Ampere and
    # later, which changes results and gains nothing for layers this small.
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    # oneDNN's CPU convolutions give results that depend on the thread count (measured: 1 and 2
    # threads differ after a few hundred steps); PyTorch's native kernels give the same bits for
    # any thread count, as MKL's matrix products do in strict mode (below), and are
    # also faster at the tutorial's batch of 4.
    torch.backends.mkldnn.enabled = False
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParamsError(f"device is 'cuda' but PyTorch {torch.__version__} sees no "
                          "CUDA GPU here; set device to auto or cpu")
    return torch.device(device)


def threaded_matrix_products() -> None:
    """Make MKL's matrix products give the same bits for any thread count, where the train stage
    runs on every core (training.configure_cpu).

    Under the portable CPU pin MKL already runs on one thread (portable_cpu.pin). Without it, MKL
    splits a long reduction (from a batch of about 768, the linear layers' weight gradients)
    across threads and adds the parts in an order that depends on their number; its strict
    reproducible mode keeps the order fixed. That mode takes other kernels for small matrices
    (other bits) and slows one-thread training, so it is asked for only here. MKL reads the
    setting at its first call: this must come before any computation in the process.
    """
    if not portable_cpu.wanted():
        os.environ.setdefault("MKL_CBWR", portable_cpu.mkl_cbwr(threaded=True))


def flags() -> dict:
    """The determinism switches in force, for provenance records."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "fill_uninitialized_memory": torch.utils.deterministic.fill_uninitialized_memory,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "mkldnn": torch.backends.mkldnn.enabled,
        "cudnn_conv_fp32_precision": torch.backends.cudnn.conv.fp32_precision,
        "cuda_matmul_fp32_precision": torch.backends.cuda.matmul.fp32_precision,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
        # The CPU code paths: whether the portable pin applied (MKL's branch is above) and the
        # kernels PyTorch dispatched to. The CPU's own widest kernels are in the host record
        # (provenance.host): hosts that share the pinned bits must not differ here.
        "portable_cpu": portable_cpu.wanted(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
