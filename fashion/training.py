"""Training: the tutorial's SGD loop over seeded mini-batches of a device-resident dataset."""

import functools
import hashlib
import inspect
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
    """One thread at small batches; every core from THREADED_FROM_BATCH on, MKL in strict mode.

    At small batches the operations are too small to split well: on an idle 2-core machine two
    threads were 3 to 6% faster than one at batch 4, but with the other core busy (a TensorBoard
    server, a second queued experiment, the figure worker starting) a step took 1.9 to 11 ms on
    two threads against 0.6 ms on one. The train stage on one epoch of the real data, one thread
    against two, three alternated runs of each: 0.875 of the time at batch 64, 0.976 at 128 and
    0.985 at 256, with half the CPU time; two threads won at 512 (two runs of each, not
    alternated). Two threads start where they stop losing, at 256. From THREADED_FROM_BATCH on,
    the train stage runs MKL in strict mode (determinism.strict_matrix_products), whatever the
    number of cores, so that the results are the same for any count.
    """
    if batch_size < THREADED_FROM_BATCH:
        torch.set_num_threads(1)
    else:
        determinism.strict_matrix_products()


class SGD:
    """SGD with momentum, computed as torch.optim.SGD computes it on the CPU, bit for bit.

    At the tutorial's batch of 4, Optimizer.step's Python bookkeeping doubled the cost of the
    update (74 against 37 us for these three foreach kernels, each timed alone). A zero momentum
    buffer makes the first update exactly torch's (0 * momentum + grad == grad), and lets a CUDA
    graph capture every step alike. tests/test_training.py checks the identity.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float):
        self.params, self.lr, self.momentum = params, lr, momentum
        # The buffers are views of one tensor, so that their decay is one multiplication: on the
        # CPU, _foreach_mul_ by a number multiplies one tensor after the other (16 against 5 us).
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
    """Loss, outputs and gradients of a batch, by autograd: the reference, and any Net."""
    params = list(net.parameters())

    def loss_and_grads(x, y):
        out = net(x)
        loss = F.cross_entropy(out, y)
        return loss.detach(), out.detach(), list(torch.autograd.grad(loss, params))
    return loss_and_grads


@torch.no_grad()
def _by_hand(params, x, y):
    """What `_autograd` computes for model.Net, calling the kernels autograd calls, one by one.

    At the tutorial's batch of 4 a CPU step is some 50 small operations, and the autograd engine
    around them (recording the graph, then walking it) took a quarter of each step. This mirrors
    Net.forward and the backward functions PyTorch registers for each of its operations
    (derivatives.yaml), in the same order and memory layouts, so the bits are the same;
    `_gradient_function` checks that before training with it. After an edit to fashion/model.py,
    it is brought in line here and BY_HAND_MODEL_SHA256 below updated.
    """
    aten = torch.ops.aten
    pool = ([2, 2], [2, 2])  # kernel, stride: Net's MaxPool2d(2, 2)
    w1, b1, w2, b2, w3, b3, w4, b4, w5, b5 = params
    r1 = F.relu(F.conv2d(x, w1, b1))
    p1, i1 = aten.max_pool2d_with_indices(r1, *pool)
    r2 = F.relu(F.conv2d(p1, w2, b2))
    p2, i2 = aten.max_pool2d_with_indices(r2, *pool)
    f = p2.flatten(1)
    h3 = F.relu(F.linear(f, w3, b3))
    h4 = F.relu(F.linear(h3, w4, b4))
    out = F.linear(h4, w5, b5)
    log_p = F.log_softmax(out, 1)
    # F.cross_entropy's defaults: reduction 1 is the mean, and ignore_index -100 ignores no class.
    loss, total_weight = aten.nll_loss_forward(log_p, y, None, 1, -100)

    g = aten.nll_loss_backward(torch.ones_like(loss), log_p, y, None, 1, -100, total_weight)
    g = aten._log_softmax_backward_data(g, log_p, 1, log_p.dtype)
    # linear is addmm(b, a, w.t()): autograd takes w's gradient as g.t() @ a, b's as g summed.
    gw5, gb5 = g.t().mm(h4), g.sum(0)
    g = aten.threshold_backward(g.mm(w5), h4, 0)
    gw4, gb4 = g.t().mm(h3), g.sum(0)
    g = aten.threshold_backward(g.mm(w4), h3, 0)
    gw3, gb3 = g.t().mm(f), g.sum(0)
    g = g.mm(w3).view_as(p2)
    g = aten.max_pool2d_with_indices_backward(g, r2, *pool, [0, 0], [1, 1], False, i2)
    g = aten.threshold_backward(g, r2, 0)
    g, gw2, gb2 = aten.convolution_backward(g, p1, w2, [w2.shape[0]], [1, 1], [0, 0], [1, 1],
                                            False, [0, 0], 1, [True, True, True])
    g = aten.max_pool2d_with_indices_backward(g, r1, *pool, [0, 0], [1, 1], False, i1)
    g = aten.threshold_backward(g, r1, 0)
    _, gw1, gb1 = aten.convolution_backward(g, x, w1, [w1.shape[0]], [1, 1], [0, 0], [1, 1],
                                            False, [0, 0], 1, [False, True, True])
    return loss, out, [gw1, gb1, gw2, gb2, gw3, gb3, gw4, gb4, gw5, gb5]


# The SHA-256 of fashion/model.py, whose Net `_by_hand` was written for and checked against. Any
# edit there changes it (the class, a helper it calls, initial_net), and training then uses
# autograd until `_by_hand` is brought in line and this is updated.
BY_HAND_MODEL_SHA256 = "f760168b4eec567c628c4d6bd8ced0218af0bb88878bc89eaee462655f87dcdc"


def _model_source_sha256() -> str | None:
    try:
        return hashlib.sha256(inspect.getsource(model).encode()).hexdigest()
    except OSError:  # no source file: a bytecode-only installation, say
        return None


def _gradient_function(net, x, y, by_hand: bool) -> GradientFunction:
    """`_by_hand` where it applies and gives autograd's bits on the batch (x, y); else autograd.

    It applies on the CPU to the model.Net it was written for. A GPU runs the step as a CUDA
    graph, whose replay costs nothing for the engine; there the autograd step is kept. The check
    of the bits guards against another PyTorch, whose kernels or backward formulas may differ.
    Where it does not apply, training says why on stderr and uses autograd.
    """
    reference = _autograd(net)
    if not by_hand or x.device.type != "cpu":
        return reference
    source = _model_source_sha256()
    if source is None:
        why = "fashion/model.py cannot be read to check that training._by_hand is written for it"
    elif source != BY_HAND_MODEL_SHA256:
        why = (f"fashion/model.py has changed since training._by_hand was written for its Net. "
               f"Once _by_hand computes the changed network (after a change to comments alone "
               f"it does), set BY_HAND_MODEL_SHA256 in fashion/training.py to {source}")
    elif type(net) is not model.Net:
        why = f"training._by_hand is written for model.Net, not {type(net).__name__}"
    else:
        params = [p.detach() for p in net.parameters()]
        ours, theirs = _by_hand(params, x, y), reference(x, y)
        if all(torch.equal(a, b) for a, b in zip((*ours[:2], *ours[2]), (*theirs[:2], *theirs[2]),
                                                 strict=True)):
            return functools.partial(_by_hand, params)
        why = f"training._by_hand does not give the bits of autograd in PyTorch {torch.__version__}"
    click.echo(f"Note: {why}; training uses autograd, about a third slower on the CPU.", err=True)
    return reference


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
          log_every: int, seed: int, on_log: OnLog | None = None, cuda_graph: bool = True,
          by_hand: bool = False) -> TrainResult:
    """Train `net` in place on normalised `images` (N, 1, 28, 28) and `labels`, both on its device.

    Each time the images seen pass a multiple of `log_every`, and at the end for a last partial
    window, `on_log` gets the window's statistics and the last batch (see log_point_due).
    On a GPU the step is a CUDA graph unless `cuda_graph` is False (the eager reference).
    `by_hand` computes gradients with `_by_hand` on the CPU, the same bits faster; only for a
    model.Net without hooks, as model.initial_net makes it, since `_by_hand` runs none.
    On several CPU threads at large batches the bits depend on the thread count unless the
    process called determinism.strict_matrix_products before computing anything, as the train
    stage does from THREADED_FROM_BATCH on.
    """
    device = images.device
    sgd = SGD(list(net.parameters()), lr, momentum)
    # Checked on as many images as a mini-batch holds, up to 64: where PyTorch picks convolution
    # kernels by batch size, the small batches' own; and cheap at any batch size.
    check = min(batch_size, 64)
    loss_and_grads = _gradient_function(net, images[:check], labels[:check], by_hand)
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
                           by_hand=True,
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
