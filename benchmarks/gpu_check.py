"""Every GPU check in one run; prints a short table (`make gpu-check`).

1. tests/test_cuda.py: the CUDA-graph step against eager CUDA and the CPU, the train stage on CUDA.
2. The benchmark on CUDA: the tutorial moved to the GPU against the stages (scripts/bench.py).
3. Reproduction: the train stage twice, weights, metrics and logs compared byte for byte.
4. The cost of a training step on the real data: eager CUDA against the CUDA graph, same bits.
5. One replay of the graph: its kernels and the GPU's busy time, PyTorch's fill of empty tensors
   off (as the stages run) and on (FASHION_FILL_UNINITIALIZED=1).
6. Start-up: a fresh process importing torch and creating its CUDA context, three times.

A check that fails is reported in the table and the others still run. Needs the fetched data in
data/fashion-mnist, the packages of requirements.txt except dvc, and pytest. `--device cpu --quick` runs
the same code on the CPU, to check this script.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEP_COST_IMAGES = 8000  # 2000 steps of 4: enough for a stable per-step time, seconds eagerly


def digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(b"".join(p.relative_to(path).as_posix().encode() + p.read_bytes()
                                       for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checked(subprocess_args: list, timeout: float) -> subprocess.CompletedProcess:
    """Run a process with its output passing through; a failure or a hang raises."""
    done = subprocess.run([str(a) for a in subprocess_args], cwd=ROOT, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(str(subprocess_args[1])).name} exited {done.returncode}")
    return done


def cuda_tests(device: str, state: dict, **_) -> list[tuple[str, str]]:
    # -x and a per-test timeout (which prints every thread's stack): a hang costs a minute, and
    # the remaining checks then run the step eagerly.
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-v", "--timeout", "60",
                           "-p", "no:cacheprovider", "tests/test_cuda.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    print(done.stdout[-6000:], done.stderr[-2000:])
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "no output"
    if done.returncode == 0:
        return [("tests/test_cuda.py", summary)]
    if device == "cuda":
        os.environ["FASHION_CUDA_GRAPH"] = "0"
        state["graph"] = False
        summary += "; later checks run the step eagerly"
    return [("tests/test_cuda.py", f"FAILED: {summary}")]


def step_cost(device: str, data_dir: Path, quick: bool, state: dict, **_) -> list[tuple[str, str]]:
    import torch

    from fashion import data, determinism, model, training

    determinism.configure(device)
    images, labels = data.load_split(data_dir, "train")
    n = 1200 if quick else STEP_COST_IMAGES
    images, labels = data.normalize(images[:n]).to(device), labels[:n].to(device)
    rows, weights = [], {}
    modes = (("eager", False), ("CUDA graph", True)) if state.get("graph", True) else (("eager", False),)
    for name, graph in modes:
        net = model.initial_net(0).to(device)
        start = time.perf_counter()
        result = training.train(net, images, labels, lr=0.001, momentum=0.9, batch_size=4,
                                epochs=1, log_every=10**9, seed=0, cuda_graph=graph)
        seconds = time.perf_counter() - start  # train() ends on .item(): the GPU has finished
        weights[name] = torch.nn.utils.parameters_to_vector(net.parameters()).detach().cpu()
        rows.append((f"train step, {name}, ms (incl. capture)",
                     f"{seconds / result.steps * 1000:.3f} over {result.steps} steps"))
    if len(weights) == 1:
        return rows
    same = torch.equal(weights["eager"], weights["CUDA graph"])
    return rows + [("eager and graph weights identical", "yes" if same else "NO")]


def graph_profile(device: str, data_dir: Path, state: dict, **_) -> list[tuple[str, str]]:
    """What one replay of the captured step costs: its kernels, the GPU's busy time, and replays
    back to back; with PyTorch's fill of empty tensors off, as the stages run, and on."""
    if device != "cuda" or not state.get("graph", True):
        return [("graph replay profile", "skipped: needs the CUDA graph")]
    import torch
    from torch.profiler import ProfilerActivity, profile

    from fashion import data, determinism, model, training

    determinism.configure(device)
    images, labels = data.load_split(data_dir, "train")
    images, labels = data.normalize(images[:1000]).to(device), labels[:1000].to(device)
    rows = []
    try:
        for fill in (False, True):
            torch.utils.deterministic.fill_uninitialized_memory = fill
            net = model.initial_net(0).to(device)
            tallies = [torch.zeros((), dtype=dtype, device=device) for dtype in (torch.float64, torch.int64)]
            sgd = training.SGD(list(net.parameters()), lr=0.001, momentum=0.9)
            step = training._CudaGraphStep(training._autograd(net), sgd, images, labels, 4, *tallies)
            for _ in range(100):
                step.graph.replay()
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(2000):
                step.graph.replay()
            torch.cuda.synchronize()
            back_to_back = (time.perf_counter() - start) / 2000 * 1e6
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(10):
                    step.graph.replay()
                torch.cuda.synchronize()
            kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            busy = sum(e.device_time for e in kernels) / 10
            rows.append((f"one graph replay, fill of empty tensors {'on' if fill else 'off'}",
                         f"{len(kernels) / 10:.0f} kernels, GPU busy {busy:.1f} us; "
                         f"{back_to_back:.1f} us a replay back to back"))
    finally:
        determinism.configure(device)
    return rows


def benchmark(device: str, data_dir: Path, quick: bool, out_dir: Path, state: dict,
              **_) -> list[tuple[str, str]]:
    bench = out_dir / f"bench-{device}.json"
    checked([sys.executable, ROOT / "scripts/bench.py", "--device", device, "--data", data_dir,
             "--json", bench, *(["--quick"] if quick else [])], timeout=300)
    results = json.loads(bench.read_text())
    state["params"] = results["params"]
    machine, tutorial, ours = results["machine"], results["tutorial"], results["ours"]
    stages = sum(ours[s]["wall"] for s in ("visualize", "train", "evaluate"))
    return [
        ("machine", f"{machine['gpu'] or machine['cpu']}; torch {machine['torch']}"),
        ("tutorial: whole process / train phase, s",
         f"{tutorial['wall']:.1f} / {tutorial['phases']['train']:.1f}"),
        ("stages: visualize + train + evaluate, s", f"{stages:.1f}"),
        ("train stage: whole process / training loop, s",
         f"{ours['train']['wall']:.1f} / {ours['train']['loop_seconds']:.2f}"),
        ("train stage loop, fastest of the runs logging / never logging, s",
         (f"{ours['train_logging']['loop_seconds']:.2f} / "
          f"{ours['train_without_logging']['loop_seconds']:.2f}")),
        ("speed-up, training loop", f"{tutorial['phases']['train'] / ours['train']['loop_seconds']:.1f}x"),
        ("speed-up, train phase / train process",
         f"{tutorial['phases']['train'] / ours['train']['wall']:.1f}x"),
        ("speed-up, whole", f"{tutorial['wall'] / stages:.1f}x"),
        ("test accuracy, tutorial / ours", f"{tutorial['accuracy']:.4f} / {ours['accuracy']:.4f}"),
        ("peak RSS of train, MB", f"{ours['train']['peak_rss_mb']:.0f}"),
    ]


def reproduction(device: str, data_dir: Path, quick: bool, out_dir: Path, state: dict,
                 **_) -> list[tuple[str, str]]:
    from fashion import params

    values = state.get("params") or params.load(ROOT / "params.yaml", tuple(params.RULES))
    values = {**values, "device": device, **({"log_every": 400} if quick else {})}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params.write(work / "params.yaml", values)
        runs = []
        for i in (1, 2):
            run_dir = work / f"run{i}"
            outs = {"model": run_dir / "model.pt", "metrics": run_dir / "train.json",
                    "losses": run_dir / "loss.csv", "logdir": run_dir / "runs"}
            checked([sys.executable, ROOT / "scripts/train.py", "--params", work / "params.yaml",
                     "--data", data_dir, "--model", outs["model"], "--metrics", outs["metrics"],
                     "--provenance", run_dir / "provenance.json", "--plots", outs["losses"],
                     "--logdir", outs["logdir"]], timeout=90)
            runs.append({name: digest(path) for name, path in outs.items()})
        metrics = json.loads(outs["metrics"].read_text())
    (out_dir / f"reproduction-{device}.json").write_text(json.dumps(runs, indent=2) + "\n")
    rows = [(f"two train runs: identical {name}", "yes" if runs[0][name] == runs[1][name] else "NO")
            for name in runs[0]]
    return rows + [("train stage final window: loss / accuracy",
                    f"{metrics['loss']:.4f} / {metrics['accuracy']:.4f}")]


def startup(device: str, **_) -> list[tuple[str, str]]:
    """What every stage pays before its work: the train stage's floor on a fast GPU."""
    code = "import torch" + ("; torch.zeros(1, device='cuda'); torch.cuda.synchronize()"
                             if device == "cuda" else "")
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
        seconds.append(time.perf_counter() - start)
    what = "import torch" + (" + CUDA context" if device == "cuda" else "")
    return [(f"fresh process: {what}, s", " / ".join(f"{s:.2f}" for s in seconds))]


@click.command()
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True)
@click.option("--data", "data_dir", default="data/fashion-mnist", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Fetched Fashion-MNIST (ignored with --quick).")
@click.option("--out", "out_dir", default="gpu-check", show_default=True,
              type=click.Path(path_type=Path), help="Where the JSON results go.")
@click.option("--quick", is_flag=True, help="Generated data and a few hundred steps.")
def main(device, data_dir, out_dir, quick):
    if not quick and not data_dir.is_dir():
        raise click.UsageError(f"{data_dir} does not exist: run `dvc repro fetch` first, or pass "
                               "--quick to check this script on generated data")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if quick:
            from fashion import synthetic

            work = Path(tmp)
            checksums = synthetic.write(work / "mirror", n_train=1200, n_test=400)
            data_dir = work / "data"
            checked([sys.executable, ROOT / "scripts/fetch.py", "--out", data_dir, "--mirror",
                     work / "mirror", "--checksums", checksums], timeout=60)
        rows, state = [], {}
        for check in (cuda_tests, benchmark, reproduction, step_cost, graph_profile, startup):
            click.echo(f"\n== {check.__name__} ==", err=True)
            start = time.perf_counter()
            try:
                found = check(device=device, data_dir=data_dir.resolve(), quick=quick,
                              out_dir=out_dir, state=state)
            except Exception as exc:
                traceback.print_exc()
                found = [(check.__name__, f"FAILED: {exc}")]
            found.append((f"({check.__name__} took, s)", f"{time.perf_counter() - start:.0f}"))
            rows += found
            for name, value in found:  # as they come, in case a later check never ends
                click.echo(f"|> {name} | {value} |", err=True)

    click.echo(f"\ndevice {device}")
    click.echo("| check | value |\n|---|---|")
    for name, value in rows:
        click.echo(f"| {name} | {value} |")
    sys.exit(1 if any(value == "NO" or value.startswith("FAILED") for _, value in rows) else 0)


if __name__ == "__main__":
    main()
