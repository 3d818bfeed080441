import json
import subprocess
import sys

import pytest
import torch

from fashion.errors import FashionError
from tests.conftest import ROOT, load_script, write_params

pytestmark = pytest.mark.slow


def test_quick_benchmark_runs_both_sides_and_reports(tmp_path, env):
    out = tmp_path / "bench.json"
    # Not the defaults, which the tutorial also has: both sides must run at the file's values.
    write_params(tmp_path, lr=0.01, momentum=0.8, embedding_samples=30)
    done = subprocess.run([sys.executable, "scripts/bench.py", "--quick", "--json", str(out),
                           "--params", str(tmp_path / "params.yaml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert results["tutorial"]["steps"] == results["ours"]["train"]["steps"] == 300
    assert results["tutorial"]["hyperparameters"] == {
        "epochs": 1, "batch_size": 4, "lr": 0.01, "momentum": 0.8, "log_every": 100,
        "embedding_samples": 30}
    assert results["params"]["lr"] == 0.01 and results["params"]["embedding_samples"] == 30
    for stage in ("visualize", "train", "evaluate"):
        assert results["ours"][stage]["wall"] > 0 and results["ours"][stage]["peak_rss_mb"] > 0
    assert 0 <= results["ours"]["accuracy"] <= 1 and 0 <= results["tutorial"]["accuracy"] <= 1
    for line in ("| tutorial, one process |", "| train stage |", "| visualize + train + evaluate |",
                 "speed-up, whole", "logging cost, fastest against fastest"):
        assert line in done.stdout
    # Logging's cost from alternated runs, the first logging one being the stage run itself.
    logging, quiet = results["ours"]["train_logging"], results["ours"]["train_without_logging"]
    assert len(logging["loops"]) == len(quiet["loops"]) == 2
    assert logging["loops"][0] == results["ours"]["train"]["loop_seconds"]
    assert quiet["loop_seconds"] == min(quiet["loops"]) and quiet["wall"] == min(quiet["walls"])


def test_a_command_s_peak_memory_is_its_own_not_the_benchmark_s(tmp_path):
    bench = load_script("bench")
    ballast = torch.ones(300 * 2**20 // 4)  # this process holds 300 MB more than either command
    small = bench.timed([sys.executable, "-c", "pass"], tmp_path)
    large = bench.timed([sys.executable, "-c", "ballast = b'x' * (400 * 2**20)"], tmp_path)
    assert ballast.sum() > 0
    assert small.peak_rss_mb < 100
    assert 400 < large.peak_rss_mb < 500
    assert small.wall > 0 and large.wall > small.wall


@pytest.mark.parametrize("command, error", [
    (["no-such-command"], "No such file or directory: 'no-such-command'"),
    ([sys.executable, "-c", "import sys; sys.exit('bad input')"], "exited 1:\nbad input"),
    ([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"], "was killed by SIGKILL"),
], ids=["missing", "failing", "killed"])
def test_a_command_that_fails_is_one_error_naming_it(tmp_path, command, error):
    with pytest.raises(FashionError) as failure:
        load_script("bench").timed(command, tmp_path)
    assert str(failure.value).startswith(command[0]) and error in str(failure.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line_before_any_work(env):
    done = subprocess.run([sys.executable, "scripts/bench.py", "--device", "cuda"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    # The last line: a CPU-only PyTorch beside a broken NVIDIA driver warns first.
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: --device cuda, but PyTorch {torch.__version__} sees no CUDA GPU here; "
        "leave --device out to benchmark on the CPU")


def test_gpu_check_runs_every_check_on_the_cpu(tmp_path, env):
    # The GPU check is run where a GPU is lent, rarely and briefly: this keeps it working.
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout[done.stdout.index("| check | value |"):]
    assert "FAILED" not in table and "| NO |" not in table
    for name in ("model", "metrics", "losses", "logdir"):
        assert f"| two train runs: identical {name} | yes |" in table
    for row in ("| speed-up, training loop |", "| train step, eager, ms (incl. capture) |",
                "| fresh process: import torch, s |",
                "| graph replay profile | skipped: needs the CUDA graph |"):
        assert row in table
    runs = json.loads((tmp_path / "reproduction-cpu.json").read_text())
    assert len(runs) == 2 and runs[0] == runs[1]
    assert json.loads((tmp_path / "bench-cpu.json").read_text())["ours"]["train"]["steps"] == 300
