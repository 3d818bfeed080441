"""Time the tutorial as written against this project's stages, side by side (`make bench`)."""

import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Import fashion/ from this checkout, as the stage scripts it runs do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click
import torch

from fashion import cli, data, params, provenance, synthetic
from fashion.errors import FashionError

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("visualize", "train", "evaluate")
LOGGING_PAIRS = 2  # train runs with and without logging, for the cost of logging
QUICK_IMAGES = 1200  # generated training images with --quick: 300 steps at batch 4


@dataclass
class Run:
    wall: float        # seconds, the whole process
    peak_rss_mb: float
    stdout: str
    stderr: str


# Linux counts in a command's peak resident memory that of the address space its exec replaced:
# started from this process, which has imported torch, even `python -c pass` peaked at its size. A
# small Python process in between starts each command and reports what wait4 says of it.
# Linux keeps the largest of a command and the processes it waited for, not their sum: the
# train stage's figure worker, a process of its own, is not added to the stage's figure.
LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
try:
    command = subprocess.Popen(sys.argv[2:])
except OSError as error:
    sys.exit(str(error))
try:
    _, status, usage = os.wait4(command.pid, 0)
except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: let the command finish
    _, status, usage = os.wait4(command.pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as report:
    report.write(f"{os.waitstatus_to_exitcode(status)} {wall!r} {usage.ru_maxrss}")
"""


def timed(args: list, cwd: Path) -> Run:
    """Run a process to completion; its wall time and peak resident memory."""
    args = [str(a) for a in args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r") as report:
        launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, report.name, *args], cwd=cwd,
                                    stdout=out, stderr=err)
        try:
            launcher.wait()
        except KeyboardInterrupt:  # the command got it too: it stops in its own way, first
            launcher.wait()
            raise
        out.seek(0)
        err.seek(0)
        stdout, stderr, measured = out.read(), err.read(), report.read().split()
    if not measured:
        raise FashionError(f"{args[0]} could not be started: {stderr.strip()}")
    code, wall, peak_kb = int(measured[0]), float(measured[1]), int(measured[2]) / 1024
    if code != 0:
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
        raise FashionError(f"{' '.join(args)} {how}:\n{stderr[-2000:]}")
    return Run(wall, peak_kb, stdout, stderr)


def prepare_data(work: Path, quick: bool, data_dir: Path) -> Path:
    if not quick:
        data.load_split(data_dir, "test")  # fails with a clear message unless fetched and intact
        return data_dir.resolve()
    checksums = synthetic.write(work / "mirror", n_train=QUICK_IMAGES, n_test=400)
    fetched = work / "data"
    timed([sys.executable, ROOT / "scripts/fetch.py", "--out", fetched, "--mirror", work / "mirror",
           "--checksums", checksums], ROOT)
    return fetched


def tutorial_root(work: Path, data_dir: Path) -> Path:
    """torchvision's FashionMNIST layout (root/FashionMNIST/raw/), linked to the fetched files."""
    raw = work / "tutorial-data/FashionMNIST/raw"
    raw.mkdir(parents=True)
    for name in data.FILES:
        (raw / name).symlink_to(data_dir / name)
    return work / "tutorial-data"


def stage_command(stage: str, params_file: Path, data_dir: Path, out: Path) -> list:
    """The command that runs one stage with all its outputs under `out`."""
    outputs = {"visualize": ["--logdir", out / "runs/visualize"],
               "train": ["--model", out / "model.pt", "--metrics", out / "train.json",
                         "--provenance", out / "prov-train.json", "--plots", out / "loss.csv",
                         "--logdir", out / "runs/train"],
               "evaluate": ["--model", out / "model.pt", "--metrics", out / "eval.json",
                            "--provenance", out / "prov-eval.json", "--confusion",
                            out / "confusion.csv", "--pr-dir", out / "pr", "--logdir",
                            out / "runs/evaluate"]}[stage]
    return [sys.executable, ROOT / f"scripts/{stage}.py", "--params", params_file,
            "--data", data_dir, *outputs]


def trained(stderr: str) -> tuple[int, float]:
    """Steps and training-loop seconds from the train stage's last line."""
    found = re.search(r"trained (\d+) steps? in ([\d.]+) s", stderr)
    if found is None:
        raise FashionError("the train stage did not print its `trained N steps in S s` line; "
                           "update trained() in scripts/bench.py to its new wording")
    return int(found[1]), float(found[2])


def row(name, wall, steps_per_s=None, accuracy=None, rss=None, digits=1):
    cells = [name, f"{wall:.{digits}f}", f"{steps_per_s:.0f}" if steps_per_s else "",
             f"{accuracy:.4f}" if accuracy is not None else "", f"{rss:.0f}" if rss else ""]
    return "| " + " | ".join(cells) + " |"


@click.command()
@click.option("--quick", is_flag=True,
              help=f"{QUICK_IMAGES:,} generated training images: checks that the benchmark runs, "
                   "not how fast.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--data", "data_dir", default="data/fashion-mnist", show_default=True,
              type=click.Path(path_type=Path), help="Fetched Fashion-MNIST (ignored with --quick).")
@click.option("--skip-tutorial", is_flag=True, help="Time only this project's stages.")
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Also write the measurements as JSON here.")
@cli.params_option
@cli.stage_command
def main(quick, device, data_dir, skip_tutorial, json_path, params_path):
    """Run the tutorial's script and this project's visualize, train and evaluate stages at the
    same hyperparameters on the same data, each as a whole process, and print a table of wall
    time, training steps per second, test accuracy and peak memory."""
    if device == "cuda" and not torch.cuda.is_available():
        raise FashionError(f"--device cuda, but PyTorch {torch.__version__} sees no CUDA GPU here; "
                           "leave --device out to benchmark on the CPU")
    values = params.load(params_path, tuple(params.RULES))
    values.update(device=device, **({"log_every": 400} if quick else {}))
    with tempfile.TemporaryDirectory(prefix="fashion-bench-") as tmp:
        work = Path(tmp)
        data_dir = prepare_data(work, quick, data_dir)
        params.write(work / "params.yaml", values)
        results = {"machine": {"cpu": provenance.cpu_name(), "cores": os.cpu_count(),
                               "platform": platform.platform(), "torch": torch.__version__,
                               "device": device,
                               "gpu": torch.cuda.get_device_name() if device == "cuda" else None},
                   "params": values}

        if not skip_tutorial:
            click.echo("running the tutorial as written...", err=True)
            run = timed([sys.executable, ROOT / "benchmarks/tutorial.py", "--root",
                         tutorial_root(work, data_dir), "--logdir", work / "tutorial-runs",
                         "--device", device, "--epochs", values["epochs"],
                         "--batch-size", values["batch_size"], "--lr", values["lr"],
                         "--momentum", values["momentum"], "--log-every",
                         max(1, values["log_every"] // values["batch_size"]),  # mini-batches there
                         "--embedding-samples", values["embedding_samples"]], ROOT)
            report = json.loads(run.stdout.strip().splitlines()[-1])
            results["tutorial"] = {"wall": run.wall, "peak_rss_mb": run.peak_rss_mb, **report}

        ours = {}
        for stage in STAGES:
            click.echo(f"running the {stage} stage...", err=True)
            run = timed(stage_command(stage, work / "params.yaml", data_dir, work), ROOT)
            ours[stage] = {"wall": run.wall, "peak_rss_mb": run.peak_rss_mb}
            if stage == "train":
                steps, seconds = trained(run.stderr)
                ours[stage].update(steps=steps, loop_seconds=seconds)
        ours["accuracy"] = json.loads((work / "eval.json").read_text())["accuracy"]
        results["ours"] = ours
        train = ours["train"]

        # The cost of the TensorBoard scalars and figures: the same training never logging, run
        # alternately with the logging one, fastest of each. On a shared machine two runs minutes
        # apart differ by more than logging costs.
        click.echo("timing the train stage with and without logging, alternately...", err=True)
        params.write(work / "quiet.yaml", {**values, "log_every": 10**9})
        times = {"logging": {"walls": [train["wall"]], "loops": [train["loop_seconds"]]},
                 "quiet": {"walls": [], "loops": []}}
        files = {"logging": work / "params.yaml", "quiet": work / "quiet.yaml"}
        # After the stage run above: never logging, logging, never logging, ...
        for i, kind in enumerate((["quiet", "logging"] * LOGGING_PAIRS)[:-1]):
            run = timed(stage_command("train", files[kind], data_dir, work / f"again-{i}"), ROOT)
            times[kind]["walls"].append(run.wall)
            times[kind]["loops"].append(trained(run.stderr)[1])
        logging, quiet = times["logging"], times["quiet"]
        ours["train_without_logging"] = {"wall": min(quiet["walls"]),
                                         "loop_seconds": min(quiet["loops"]), **quiet}
        ours["train_logging"] = {"wall": min(logging["walls"]),
                                 "loop_seconds": min(logging["loops"]), **logging}

    print_table(results)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n")


def print_table(results: dict) -> None:
    machine, ours = results["machine"], results["ours"]
    gpu = f", {machine['gpu']}" if machine["gpu"] else ""
    click.echo(f"\n{machine['cpu']}, {machine['cores']} cores{gpu}; torch {machine['torch']}; "
               f"device {machine['device']}; batch {results['params']['batch_size']}, "
               f"{results['params']['epochs']} epoch(s), lr {results['params']['lr']}, "
               f"momentum {results['params']['momentum']}\n")
    click.echo("| run | wall s | train steps/s | test accuracy | peak RSS MB |")
    click.echo("|---|---|---|---|---|")
    total = sum(ours[s]["wall"] for s in STAGES)
    train = ours["train"]
    tutorial = results.get("tutorial")
    if tutorial:
        phases = tutorial["phases"]
        click.echo(row("tutorial, one process", tutorial["wall"], tutorial["steps"] / phases["train"],
                       tutorial["accuracy"], tutorial["peak_rss_mb"]))
        for phase in STAGES:
            click.echo(row(f"  its {phase} phase (in-process timer)", phases[phase]))
    logging, quiet = ours["train_logging"], ours["train_without_logging"]
    for stage in STAGES:
        extra = (train["steps"] / train["loop_seconds"],) if stage == "train" else (None,)
        click.echo(row(f"{stage} stage", ours[stage]["wall"], *extra, None, ours[stage]["peak_rss_mb"]))
        if stage == "train":
            click.echo(row("  its training loop (in-process timer)", train["loop_seconds"], digits=2))
            click.echo(row(f"  the loop, fastest of {len(logging['loops'])} runs",
                           logging["loop_seconds"], digits=2))
            click.echo(row(f"  the loop never logging, fastest of {len(quiet['loops'])} runs",
                           quiet["loop_seconds"], digits=2))
    click.echo(row("visualize + train + evaluate", total, None, ours["accuracy"],
                   max(ours[s]["peak_rss_mb"] for s in STAGES)))
    if tutorial:
        click.echo(f"\nspeed-up, whole (tutorial process / sum of stages): {tutorial['wall'] / total:.1f}x")
        click.echo(f"speed-up, training (tutorial train phase / train stage process): "
                   f"{tutorial['phases']['train'] / train['wall']:.1f}x; loop vs loop: "
                   f"{tutorial['phases']['train'] / train['loop_seconds']:.1f}x")
        click.echo("test accuracy, the stages' minus the tutorial's: "
                   f"{(ours['accuracy'] - tutorial['accuracy']) * 100:+.2f} points")

    def cost(key):
        return (logging[key] - quiet[key]) / quiet[key] * 100

    def loops(times):
        return ", ".join(f"{s:.2f}" for s in times["loops"])

    click.echo(f"logging cost, fastest against fastest: {cost('loop_seconds'):.1f}% of the "
               f"training loop ({loops(logging)} s against {loops(quiet)} s never logging); "
               f"{cost('wall'):.1f}% of the train stage's wall time (figures are drawn in a "
               "worker, partly after the loop)")


if __name__ == "__main__":
    main()
