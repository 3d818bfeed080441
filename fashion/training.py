"""Training: the tutorial's SGD loop over seeded mini-batches of a device-resident dataset."""

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import torch
import torch.nn.functional as F

from fashion import data, determinism, fileio, model, provenance
from fashion.cli import switch
from fashion.errors import TrainingError, memory_errors_explained
from fashion.figures import SECONDS_PER_FIGURE, FigureRenderer
from fashion.tensorboard_writer import add_serialized_summary, run_writer

FIGURE_TAG = "predictions vs. actuals"
PARAMS = ("seed", "lr", "momentum", "batch_size", "epochs", "log_every", "device")


@dataclass(frozen=True)
class LogPoint:
    images: int      # training images seen by the window's end: the x axis at any batch size
    loss: float      # mean mini-batch loss over the window: the tutorial's running_loss / 1000
    accuracy: float  # share of the window's samples the network classified right before each update
    lr: float


@dataclass(frozen=True)
class TrainResult:
    points: list[LogPoint]  # one per log_every training images, and the last window if partial
    final: LogPoint         # the last window, full or not: what the metrics report (points[-1])
    steps: int


OnLog = Callable[[LogPoint, torch.Tensor, torch.Tensor], None]


THREADED_FROM_BATCH = 256  # CPU training below this batch size runs on one thread


def configure_cpu(batch_size: int) -> None:
    """One thread at small batches; every core from THREADED_FROM_BATCH on.

    At small batches the operations are too small to split well: on an idle machine two threads
    gained little, and with the other core busy (a TensorBoard server, a second queued
    experiment, the figure worker starting) they made a step several times slower than one
    thread. One thread is as fast or faster up to a batch of 256, with half the CPU time, so two
    threads start there (docs/performance.md has the figures). From THREADED_FROM_BATCH on,
    determinism.threaded_matrix_products keeps the results the same for any number of cores.
    """
    if batch_size < THREADED_FROM_BATCH:
        torch.set_num_threads(1)
    else:
        determinism.threaded_matrix_products()


class SGD:
    """SGD with momentum, computed as torch.optim.SGD computes it on the CPU, bit for bit.

    At the tutorial's batch of 4, Optimizer.step's Python bookkeeping cost as much as the update's
    three foreach kernels themselves. A zero momentum
    buffer makes the first update exactly torch's (0 * momentum + grad == grad), and lets a CUDA
    graph capture every step alike. tests/test_training.py checks the identity.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float):
        self.params, self.lr, self.momentum = params, lr, momentum
        # The buffers are views of one tensor, so that their decay is one multiplication: on the
        # CPU, _foreach_mul_ by a number multiplies one tensor after the other, at a cost for each.
        kinds = {(p.dtype, p.device) for p in params}
        if len(kinds) != 1:
            raise ValueError(f"SGD needs parameters of one dtype and device, got {kinds or 'none'}")
        (dtype, device), = kinds
        self.flat_buffer = torch.zeros(sum(p.numel() for p in params), dtype=dtype, device=device)
        self.buffers = [b.view_as(p) for b, p in
                        zip(self.flat_buffer.split([p.numel() for p in params]), params)]

    @torch.no_grad()
    def step(self, grads) -> None:
        self.flat_buffer.mul_(self.momentum)
        torch._foreach_add_(self.buffers, grads)
        torch._foreach_add_(self.params, self.buffers, alpha=-self.lr)


GradientFunction = Callable[[torch.Tensor, torch.Tensor],
                            tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]


def _autograd(net) -> GradientFunction:
    """Loss, outputs and gradients of a batch, by autograd: any Net, on any device."""
    params = list(net.parameters())

    def loss_and_grads(x, y):
        out = net(x)
        loss = F.cross_entropy(out, y)
        return loss.detach(), out.detach(), list(torch.autograd.grad(loss, params))
    return loss_and_grads


def _sgd_step(loss_and_grads, sgd, images, labels, idx, loss_sum, correct):
    """Forward, backward and update on images[idx]; tallies stay on the device (no sync)."""
    x, y = images.index_select(0, idx), labels.index_select(0, idx)
    loss, out, grads = loss_and_grads(x, y)
    sgd.step(grads)
    loss_sum.add_(loss)
    correct.add_((out.argmax(1) == y).sum())
    return x, y


class _CudaGraphStep:
    """The SGD step captured once as a CUDA graph and replayed for every full mini-batch.

    At the tutorial's batch of 4 a step is some 54 tiny kernels, and launching them costs more
    than running them; a replay is one launch. Short final batches run eagerly.
    """

    def __init__(self, loss_and_grads, sgd, images, labels, batch_size, loss_sum, correct):
        self.eager = (loss_and_grads, sgd, images, labels, loss_sum, correct)
        self.idx = torch.arange(batch_size, device=images.device)
        saved = [p.detach().clone() for p in sgd.params]
        # Capture needs a few eager steps first (lazy state, cuBLAS handles and workspaces);
        # they train, so the weights, momentum and tallies are put back afterwards. Warm-up and
        # capture share one stream: backward runs on autograd's own thread, whose cuBLAS
        # workspace is kept per stream and must not be created while capturing, and autograd
        # nodes remember the stream they last ran on.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                _sgd_step(loss_and_grads, sgd, images, labels, self.idx, loss_sum, correct)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=side):
            self.x, self.y = _sgd_step(loss_and_grads, sgd, images, labels, self.idx, loss_sum,
                                       correct)
        with torch.no_grad():
            for p, p0 in zip(sgd.params, saved):
                p.copy_(p0)
            for buffer in sgd.buffers:
                buffer.zero_()
            loss_sum.zero_()
            correct.zero_()

    def __call__(self, idx):
        if len(idx) != len(self.idx):
            loss_and_grads, sgd, images, labels, loss_sum, correct = self.eager
            return _sgd_step(loss_and_grads, sgd, images, labels, idx, loss_sum, correct)
        self.idx.copy_(idx)
        self.graph.replay()
        return self.x, self.y


def train(net, images, labels, *, lr: float, momentum: float, batch_size: int, epochs: int,
          log_every: int, seed: int, on_log: OnLog | None = None, cuda_graph: bool = True
          ) -> TrainResult:
    """Train `net` in place on normalised `images` (N, 1, 28, 28) and `labels`, both on its device.

    Each time the images seen pass a multiple of `log_every`, and at the end for a last partial
    window, `on_log` gets the window's statistics and the last batch (see log_point_due).
    On a GPU the step is a CUDA graph unless `cuda_graph` is False (the eager reference).
    On several CPU threads at large batches the bits depend on the thread count unless the
    process pinned its CPU code paths or called determinism.threaded_matrix_products before
    computing anything, as the train stage does from THREADED_FROM_BATCH on.
    """
    device = images.device
    sgd = SGD(list(net.parameters()), lr, momentum)
    loss_and_grads = _autograd(net)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    if cuda_graph and device.type == "cuda" and batch_size <= len(images):
        step = _CudaGraphStep(loss_and_grads, sgd, images, labels, batch_size, loss_sum, correct)
    else:
        def step(idx):
            return _sgd_step(loss_and_grads, sgd, images, labels, idx, loss_sum, correct)

    order = determinism.generator(seed, "batch-order")
    points, steps, images_seen, window_steps, window_samples = [], 0, 0, 0, 0

    def close_window() -> LogPoint:
        nonlocal window_steps, window_samples
        total, right = loss_sum.item(), correct.item()
        if not math.isfinite(total):
            raise TrainingError(f"training diverged: the loss was {total} by step {steps - 1} "
                                f"(lr={lr}); lower lr")
        point = LogPoint(images_seen, total / window_steps, right / window_samples, lr)
        loss_sum.zero_()
        correct.zero_()
        window_steps = window_samples = 0
        return point

    for epoch in range(epochs):
        batches = data.epoch_batches(len(images), batch_size, order, device)
        with click.progressbar(batches, label=f"epoch {epoch + 1}/{epochs}", file=sys.stderr,
                               update_min_steps=max(1, len(batches) // 100)) as bar:
            for idx in bar:
                x, y = step(idx)
                steps += 1
                window_steps += 1
                window_samples += len(idx)
                images_seen += len(idx)
                if log_point_due(images_seen, len(idx), log_every):
                    points.append(close_window())
                    if on_log is not None:
                        on_log(points[-1], x, y)
        if window_steps and not math.isfinite(loss_sum.item()):
            close_window()  # raises: a diverged epoch stops here, not at the next log point
    if window_steps:  # the last, partial window: logged too, so the curve ends at the metrics
        points.append(close_window())
        if on_log is not None:
            on_log(points[-1], x, y)
    final = points[-1]
    # Each loss is that of the weights before their update, so the last update is checked here,
    # on the last mini-batch: a huge lr can also leave finite weights whose outputs overflow.
    with torch.no_grad():
        if not net(x).isfinite().all():
            raise TrainingError(f"training diverged: after the last update (step {steps - 1}) the "
                                f"network's outputs were not finite (lr={lr}); lower lr")
    return TrainResult(points, final, steps)


def log_point_due(images_seen: int, batch: int, log_every: int) -> bool:
    """Whether the mini-batch of `batch` images that brought the count to `images_seen` passed
    a multiple of `log_every`: one point per log_every images at any batch size, so curves of
    different batch sizes have comparable density (every 1,000 mini-batches of the tutorial's 4
    at the default 4,000)."""
    return images_seen // log_every > (images_seen - batch) // log_every


def _cuda_graph_wanted() -> bool:
    """FASHION_CUDA_GRAPH=0 runs the GPU step eagerly: the same bits, slower; for debugging, or a
    driver that cannot capture graphs."""
    return switch("FASHION_CUDA_GRAPH", default=True)


def logging_warning(images: int, log_every: int) -> str | None:
    """What to tell a user whose log_every logs only the end of a run of `images` training
    images, or so many figures that drawing them outlasts training by minutes; None for a
    sensible value."""
    if log_every >= images:
        return (f"log_every is {log_every} but this run trains on {images} images, so TensorBoard "
                "will show one loss point and figure, at the end; lower log_every to see "
                "training's course.")
    figures = math.ceil(images / log_every)
    seconds = figures * SECONDS_PER_FIGURE
    if seconds > 60:
        drawing = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} minutes"
        return (f"log_every is {log_every}, so this run logs {figures} figures, which take some "
                f"{drawing} to draw, mostly after training, and are held in memory until then; "
                "raise log_every to log fewer.")
    return None


def run(*, params: dict, data_dir: Path, model_path: Path, metrics_path: Path,
        provenance_path: Path, plots_path: Path, logdir: Path) -> TrainResult:
    """The train stage: fit the Net, log to TensorBoard, write weights, metrics and loss curve."""
    cuda_graph = _cuda_graph_wanted()  # first: a bad value is refused before any work
    # The figures are drawn in a worker while training goes on, and everything is written once
    # training ends, in the order of the log points: the same event file as logging inline. The
    # worker starts first, so that its imports overlap the loading below.
    with FigureRenderer() as figures:
        device = determinism.configure(params["device"])
        if device.type == "cpu":
            configure_cpu(params["batch_size"])
        images, labels = data.load_split(data_dir, "train")
        warning = logging_warning(params["epochs"] * len(images), params["log_every"])
        if warning:
            click.echo(f"Warning: {warning}", err=True)
        with memory_errors_explained(device, params["batch_size"]):
            images, labels = data.normalize(images).to(device), labels.to(device)
            net = model.initial_net(params["seed"]).to(device)

            def log(point: LogPoint, x: torch.Tensor, y: torch.Tensor) -> None:
                with torch.no_grad():
                    probs = F.softmax(net(x), dim=1)
                figures.submit(FIGURE_TAG, x, y, probs)

            start = time.perf_counter()
            result = train(net, images, labels, on_log=log, cuda_graph=cuda_graph,
                           **{k: params[k] for k in PARAMS if k != "device"})
            seconds = time.perf_counter() - start
        drawn = figures.results()

    per_second = result.steps / seconds  # under 1 for a huge batch: not to be shown as 0
    rate = f"{per_second:.0f}" if per_second >= 10 else f"{per_second:.2g}"
    trained = f"{result.steps} step{'' if result.steps == 1 else 's'}"
    click.echo(f"trained {trained} in {seconds:.2f} s ({rate} steps/s) on {device}", err=True)
    # Last, so that a stage interrupted at any earlier point has replaced none of its outputs.
    with fileio.outputs() as out:
        with run_writer(logdir, out) as writer:
            for point, figure in zip(result.points, drawn, strict=True):
                writer.add_scalar("training loss", point.loss, point.images)
                writer.add_scalar("training accuracy", point.accuracy, point.images)
                writer.add_scalar("learning rate", point.lr, point.images)
                add_serialized_summary(writer, figure, point.images)
        out.file(model_path, model.serialize(net))
        out.file(plots_path, ("images,loss,accuracy\n" + "".join(
            f"{p.images},{p.loss!r},{p.accuracy!r}\n" for p in result.points)).encode())
        out.file(metrics_path, fileio.json_bytes({
            "loss": result.final.loss,
            "accuracy": result.final.accuracy,
            "steps": result.steps,
        }))
        provenance.write(out, provenance_path, device, params, data_dir)
    return result
