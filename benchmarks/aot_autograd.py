"""AOTAutograd against eager autograd in the train stage's loop: time and bits.

AOTAutograd (torch.compile's `aot_eager` backend) records the forward and backward of `Net` once
and replays them with the same kernels, so it follows any change to fashion/model.py. This runs
the train stage's loop (`training.train`, no logging) on the real data at params.yaml's values,
eager and compiled alternately, and prints each run's time and whether the weights are the
eager run's, byte for byte. docs/performance.md has the result.

    python benchmarks/aot_autograd.py --pairs 3
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fashion import portable_cpu  # noqa: E402

portable_cpu.pin()  # the stages' CPU code paths, before torch loads

import click  # noqa: E402
import torch  # noqa: E402

from fashion import data, determinism, model, params, training  # noqa: E402


def fit(p: dict, images: torch.Tensor, labels: torch.Tensor, compiled: bool) -> tuple[float, bytes]:
    """Seconds for one epoch, compilation included, and the trained weights' bytes."""
    net = model.initial_net(p["seed"])
    start = time.perf_counter()
    trained = torch.compile(net, backend="aot_eager") if compiled else net
    training.train(trained, images, labels, lr=p["lr"], momentum=p["momentum"],
                   batch_size=p["batch_size"], epochs=1, log_every=p["log_every"], seed=p["seed"])
    return time.perf_counter() - start, model.serialize(net)


@click.command()
@click.option("--data", "data_dir", default="data/fashion-mnist", show_default=True,
              type=click.Path(path_type=Path), help="The fetched dataset (make repro).")
@click.option("--pairs", default=3, show_default=True, type=click.IntRange(min=1),
              help="Eager and compiled runs, alternated.")
def main(data_dir: Path, pairs: int):
    """Time the training loop eagerly and through AOTAutograd; compare the weights."""
    p = params.load(Path("params.yaml"), training.PARAMS)
    determinism.configure("cpu")
    training.configure_cpu(p["batch_size"])
    images, labels = data.load_split(data_dir, "train")
    images = data.normalize(images)
    times = {False: [], True: []}
    eager_bytes = None
    for pair in range(pairs):
        for compiled in (False, True):
            seconds, weights = fit(p, images, labels, compiled)
            times[compiled].append(seconds)
            eager_bytes = eager_bytes or weights
            same = "same weights" if weights == eager_bytes else "OTHER WEIGHTS"
            click.echo(f"pair {pair + 1} {'aot_eager' if compiled else 'eager':9} "
                       f"{seconds:7.2f} s  {same}", err=True)
    eager, aot = statistics.median(times[False]), statistics.median(times[True])
    click.echo(f"median: eager {eager:.2f} s, aot_eager {aot:.2f} s, aot_eager / eager "
               f"{aot / eager:.2f} ({torch.__version__}, batch {p['batch_size']})")


if __name__ == "__main__":
    main()
