"""Every GPU check in one run; prints a short table.

1. The benchmark on CUDA: the tutorial moved to the GPU against the stages (scripts/bench.py).
2. Reproduction: the train stage twice on the GPU, weights, metrics and logs compared byte for byte.

Needs the fetched data in data/fashion-mnist and the packages of requirements.txt except dvc
(ruamel.yaml included). `--device cpu` runs the same checks on the CPU.
"""

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]


def digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(b"".join(p.relative_to(path).as_posix().encode() + p.read_bytes()
                                       for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_once(work: Path, params: Path, data: Path) -> dict:
    outs = {"model": work / "model.pt", "metrics": work / "train.json", "logdir": work / "runs"}
    subprocess.run([sys.executable, ROOT / "scripts/train.py", "--params", params, "--data", data,
                    "--model", outs["model"], "--metrics", outs["metrics"], "--provenance",
                    work / "provenance.json", "--plots", work / "loss.csv", "--logdir",
                    outs["logdir"]], check=True)
    return {name: digest(path) for name, path in outs.items()}


@click.command()
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True)
@click.option("--data", "data_dir", default="data/fashion-mnist", show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", default="gpu-check", show_default=True,
              type=click.Path(path_type=Path), help="Where the JSON results go.")
@click.option("--quick", is_flag=True, help="Generated data, 300 steps (to check this script).")
def main(device, data_dir, out_dir, quick):
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = out_dir / f"bench-{device}.json"
    subprocess.run([sys.executable, ROOT / "scripts/bench.py", "--device", device, "--data",
                    data_dir, "--json", bench, *(["--quick"] if quick else [])], check=True)
    results = json.loads(bench.read_text())

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = work / "params.yaml"
        params.write_text("".join(f"{k}: {v}\n" for k, v in results["params"].items()))
        data = data_dir
        if quick:
            sys.path.insert(0, str(ROOT))
            from fashion import synthetic
            checksums = synthetic.write(work / "mirror", n_train=1200, n_test=400)
            data = work / "data"
            subprocess.run([sys.executable, ROOT / "scripts/fetch.py", "--out", data, "--mirror",
                            work / "mirror", "--checksums", checksums], check=True)
        runs = [train_once(work / f"run{i}", params, data) for i in (1, 2)]
    identical = {name: runs[0][name] == runs[1][name] for name in runs[0]}
    (out_dir / f"reproduction-{device}.json").write_text(json.dumps(
        {"runs": runs, "identical": identical}, indent=2) + "\n")

    machine, tutorial, ours = results["machine"], results["tutorial"], results["ours"]
    click.echo(f"\n{machine['gpu'] or machine['cpu']}; torch {machine['torch']}; device {device}")
    click.echo("| check | value |\n|---|---|")
    click.echo(f"| tutorial train phase, s | {tutorial['phases']['train']:.1f} |")
    click.echo(f"| tutorial whole process, s | {tutorial['wall']:.1f} |")
    click.echo(f"| train stage training loop, s | {ours['train']['loop_seconds']:.2f} |")
    click.echo(f"| train stage whole process, s | {ours['train']['wall']:.1f} |")
    loop_ratio = tutorial["phases"]["train"] / ours["train"]["loop_seconds"]
    whole_ratio = tutorial["wall"] / sum(ours[s]["wall"] for s in ("visualize", "train", "evaluate"))
    click.echo(f"| speed-up, training loop | {loop_ratio:.1f}x |")
    click.echo(f"| speed-up, visualize+train+evaluate | {whole_ratio:.1f}x |")
    click.echo(f"| test accuracy, tutorial / ours | {tutorial['accuracy']:.4f} / {ours['accuracy']:.4f} |")
    for name, same in identical.items():
        click.echo(f"| two train runs: identical {name} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
