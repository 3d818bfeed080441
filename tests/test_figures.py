import io
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard._utils import figure_to_image

from fashion.data import CLASSES
from fashion.errors import FashionError
from fashion.figures import WORKER, FigureRenderer, Panel, image_summary, predictions_figure
from fashion.tensorboard_writer import add_serialized_summary
from tests.conftest import ROOT
from tests.events import summaries


def blank_batch():
    """Images, labels and probabilities of a batch of four: enough for the worker to draw."""
    return torch.zeros(4, 1, 28, 28), torch.arange(4), torch.full((4, 10), 0.1)


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 7])
def test_any_batch_size_shows_up_to_four_panels(batch):
    images = torch.rand(batch, 1, 28, 28) * 2 - 1
    labels = torch.arange(batch) % 10
    probs = torch.nn.functional.one_hot((labels + (torch.arange(batch) % 2)) % 10, 10).float()
    fig = predictions_figure(images, labels, probs)
    axes = fig.get_axes()
    assert len(axes) == min(4, batch)
    for i, ax in enumerate(axes):
        predicted = (i + i % 2) % 10
        assert ax.get_title().startswith(f"{CLASSES[predicted]}, 100.0%\n(label: {CLASSES[i % 10]})")
        assert ax.title.get_color() == ("green" if i % 2 == 0 else "red")
    image = figure_to_image(fig)
    assert image.shape[0] == 3 and image.shape[2] > image.shape[1] * (min(4, batch) - 1) / 2


def test_accepts_tensors_that_need_grad():
    net = torch.nn.Linear(784, 10)
    images = torch.rand(2, 1, 28, 28)
    probs = net(images.flatten(1)).softmax(1)
    assert probs.requires_grad
    assert len(predictions_figure(images, torch.tensor([0, 1]), probs).get_axes()) == 2


def test_worker_writes_what_add_figure_writes(tmp_path):
    images = torch.rand(4, 1, 28, 28) * 2 - 1
    labels = torch.tensor([0, 3, 9, 5])
    probs = torch.softmax(torch.randn(4, 10, generator=torch.Generator().manual_seed(0)), 1)
    # The worker draws with matplotlib's defaults, whatever matplotlibrc this process found.
    with SummaryWriter(tmp_path / "inline") as writer, matplotlib.rc_context():
        matplotlib.rcdefaults()
        writer.add_figure("f", predictions_figure(images, labels, probs), 7)
    with FigureRenderer() as renderer, SummaryWriter(tmp_path / "worker") as writer:
        renderer.submit("f", images, labels, probs)
        [summary] = renderer.results()
        add_serialized_summary(writer, summary, 7)
    [inline], [worker] = (summaries(tmp_path / name)["f"] for name in ("inline", "worker"))
    assert inline == worker and inline[1].image.encoded_image_string.startswith(b"\x89PNG")


def test_worker_starts_after_parallel_cpu_work():
    # A forked worker hung in its first tensor operation once OpenMP's threads had run in the
    # stage (the train stage at batch 64, and every CUDA run): the worker must be a fresh process.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.ones(2000, 2000).matmul(torch.ones(2000, 2000)).sum()
        with FigureRenderer() as renderer:
            renderer.submit("f", *blank_batch())
            [summary] = renderer.results()
    finally:
        torch.set_num_threads(threads)
    assert Summary.FromString(summary).value[0].image.encoded_image_string.startswith(b"\x89PNG")


def test_results_come_back_in_submission_order():
    with FigureRenderer() as renderer:
        for label in range(10):
            renderer.submit(str(label), torch.zeros(1, 1, 28, 28), torch.tensor([label]),
                            torch.full((1, 10), 0.1))
        drawn = [Summary.FromString(s).value[0].tag for s in renderer.results()]
    assert drawn == [str(label) for label in range(10)]


def test_the_worker_never_imports_torch():
    # Importing torch can take longer than training on a GPU host: the worker must do without.
    request = pickle.dumps(("f", [Panel(np.zeros((28, 28)), "title", True)]))
    done = subprocess.run([sys.executable, "-c", f"import sys; {WORKER}; "
                           "assert 'torch' not in sys.modules, 'torch was imported'"],
                          cwd=ROOT, input=request, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    [summary] = pickle.loads(done.stdout)
    assert Summary.FromString(summary).value[0].image.encoded_image_string.startswith(b"\x89PNG")


def test_output_written_to_file_descriptor_1_while_drawing_leaves_the_answer_intact(monkeypatch):
    # A C library (a font or PNG library's warning) writes to descriptor 1, not to sys.stdout;
    # the worker's answer, a pickle on its stdout, must not take it in.
    stray = ("import os, fashion.figures as f; draw = f.panels_figure; "
             "f.panels_figure = lambda panels: (os.write(1, b'stray'), draw(panels))[1]; ")
    monkeypatch.setattr("fashion.figures.WORKER", stray + WORKER)
    with FigureRenderer() as renderer:
        renderer.submit("f", *blank_batch())
        [summary] = renderer.results()
    assert Summary.FromString(summary).value[0].tag == "f"


def test_a_users_matplotlibrc_does_not_change_the_figures(tmp_path, monkeypatch):
    def drawn() -> bytes:
        with FigureRenderer() as renderer:
            renderer.submit("f", *blank_batch())
            [summary] = renderer.results()
        return summary

    reference = drawn()
    monkeypatch.chdir(tmp_path)  # matplotlib reads ./matplotlibrc first
    (tmp_path / "matplotlibrc").write_text("figure.dpi: 50\nfont.size: 20\n")
    assert drawn() == reference


def ignored_signals(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)


def test_the_worker_ignores_ctrl_c_from_its_start():
    # Ctrl-C reaches the stage's whole process group. The stage stops the worker on its way out;
    # a worker interrupted while importing would print a traceback beside the stage's message.
    sigint = 1 << (signal.SIGINT - 1)
    with FigureRenderer() as renderer:
        assert ignored_signals(renderer.worker.pid) & sigint  # already as it starts up
        assert os.getpgid(renderer.worker.pid) == os.getpgid(0)  # and killed with the group
    assert not ignored_signals(os.getpid()) & sigint  # the stage's own handler is back


@pytest.mark.parametrize("cut", [None, -40], ids=["between-requests", "mid-request"])
def test_a_worker_whose_stage_was_killed_leaves_quietly(cut):
    # The stage killed with SIGKILL: the worker reads the end of its input, perhaps in the middle
    # of a request, and answers into a pipe nobody reads.
    worker = subprocess.Popen([sys.executable, "-c", WORKER],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    worker.stdout.close()
    request = pickle.dumps(("f", [Panel(np.zeros((28, 28)), "title", True)]))
    worker.stdin.write(request + request[:cut])
    worker.stdin.close()
    stderr = worker.stderr.read().decode()
    assert worker.wait(timeout=60) == 1 and stderr == ""


def test_a_worker_that_dies_fails_the_stage_in_one_sentence():
    with FigureRenderer() as renderer:
        renderer.submit("f", torch.zeros(1, 1, 28, 28), torch.tensor([0]), torch.full((1, 10), 0.1))
        renderer.worker.kill()
        with pytest.raises(FashionError, match="the figure worker failed"):
            renderer.results()


def test_a_stuck_worker_is_stopped(monkeypatch):
    monkeypatch.setattr(FigureRenderer, "TIMEOUT", 1)
    monkeypatch.setattr(FigureRenderer, "PER_FIGURE", 0)
    with FigureRenderer() as renderer:
        os.kill(renderer.worker.pid, signal.SIGSTOP)
        for _ in range(50):  # more than the pipe holds: the sender blocks
            renderer.submit("f", *blank_batch())
        with pytest.raises(FashionError, match="had not finished after"):
            renderer.results()


def test_a_program_read_from_stdin_can_draw_figures():
    # A multiprocessing worker re-ran the parent's main script, which a program fed on stdin
    # does not have: the pool respawned its worker until the timeout ended the stage.
    program = ("import torch\nfrom fashion.figures import FigureRenderer\n"
               "with FigureRenderer() as renderer:\n"
               "    renderer.submit('f', torch.zeros(1, 1, 28, 28), torch.tensor([0]), "
               "torch.full((1, 10), 0.1))\n"
               "    print(len(renderer.results()))\n")
    done = subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr


GREEN, RED = (0, 128, 0), (255, 0, 0)  # matplotlib's "green" and "red"


def drawn_pixels(images, labels, probs) -> np.ndarray:
    """The RGB pixels of the PNG the worker's image_summary encodes for the batch."""
    summary = Summary.FromString(image_summary("f", predictions_figure(images, labels, probs)))
    png = summary.value[0].image.encoded_image_string
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def count(pixels: np.ndarray, colour) -> int:
    return int((np.abs(pixels - colour).sum(axis=2) <= 30).sum())


def test_titles_are_green_when_right_and_red_when_wrong_in_the_pixels():
    images = torch.zeros(2, 1, 28, 28)
    labels = torch.tensor([0, 1])
    probs = torch.nn.functional.one_hot(torch.tensor([0, 2]), 10).float()  # right, then wrong
    pixels = drawn_pixels(images, labels, probs)
    left, right = np.array_split(pixels, 2, axis=1)
    assert count(left, GREEN) > 50 and count(left, RED) == 0
    assert count(right, RED) > 50 and count(right, GREEN) == 0


def test_each_panel_shows_its_own_image_in_the_pixels():
    # Panel i is black (a pixel of 1, normalised to 1) in its quadrant i only, white elsewhere.
    images = torch.full((4, 1, 28, 28), -1.0)
    for i, (row, col) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        images[i, 0, 14 * row:14 * row + 14, 14 * col:14 * col + 14] = 1.0
    probs = torch.nn.functional.one_hot(torch.arange(4), 10).float()
    pixels = drawn_pixels(images, torch.arange(4), probs)
    dark = pixels.max(axis=2) < 60
    for i, part in enumerate(np.array_split(dark, 4, axis=1)):
        # The axes' box: the extent of the dark pixels (its frame and the image's black part).
        rows, cols = np.nonzero(part)
        top, bottom, first, last = rows.min(), rows.max(), cols.min(), cols.max()
        quadrants = [[part[top + (bottom - top) * (2 * r + 1) // 4,
                           first + (last - first) * (2 * c + 1) // 4] for c in (0, 1)]
                     for r in (0, 1)]
        assert sum(map(sum, quadrants)) == 1 and quadrants[i // 2][i % 2], (i, quadrants)
