import copy
import errno
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fashion import data, determinism, fetch, model, portable_cpu, synthetic, training
from fashion.errors import FashionError, TrainingError, memory_errors_explained
from tests.conftest import ROOT, write_params
from tests.events import scalars, summaries
from tests.faults import allocate_too_much, clean_env

HYPER = dict(lr=0.01, momentum=0.9, batch_size=4, epochs=2, log_every=28, seed=3)


@pytest.fixture(scope="module")
def train_set():
    images, labels = synthetic.make_split(50, np.random.default_rng(0))
    return data.normalize(torch.from_numpy(images)), torch.from_numpy(labels.astype(np.int64))


def fit(train_set, net=None, **changes):
    """`train` as the train stage calls it."""
    determinism.configure("cpu")
    hyper = {**HYPER, **changes}
    net = model.initial_net(hyper["seed"]) if net is None else net
    logged = []
    result = training.train(net, *train_set, **hyper,
                            on_log=lambda point, x, y: logged.append((point, x.clone(), y.clone())))
    return net, result, logged


def weights(net):
    return torch.nn.utils.parameters_to_vector(net.parameters()).detach()


def tutorial_loop(train_set, lr, momentum, batch_size, epochs, log_every, seed, net=None):
    """The tutorial's loop as written, over the same batches: the reference for `train`. Its log
    points are counted in images (a point each time the count passes a multiple of log_every, and
    one for a last, partial window), which at the tutorial's batch of 4 and a log_every of 4,000
    are its own every 1,000 mini-batches."""
    images, labels = train_set
    net = model.initial_net(seed) if net is None else net
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    order = determinism.generator(seed, "batch-order")
    points, running, right, seen, steps, total = [], 0.0, 0, 0, 0, 0
    for _ in range(epochs):
        for idx in data.epoch_batches(len(images), batch_size, order):
            optimizer.zero_grad()
            outputs = net(images[idx])
            loss = F.cross_entropy(outputs, labels[idx])
            loss.backward()
            optimizer.step()
            running += loss.item()
            right += (outputs.argmax(1) == labels[idx]).sum().item()
            seen += len(idx)
            steps += 1
            total += len(idx)
            if total // log_every != (total - len(idx)) // log_every:
                points.append((total, running / steps, right / seen))
                running, right, seen, steps = 0.0, 0, 0, 0
    if steps:
        points.append((total, running / steps, right / seen))
    return net, points


def assert_trained_as_the_tutorial_loop(train_set, net, result, hyper=HYPER, start=None):
    """`train`'s weights and log points are those of the tutorial's loop from `start`'s weights."""
    reference, points = tutorial_loop(train_set, **hyper, net=start)
    assert torch.equal(weights(net), weights(reference))
    assert [(p.images, p.loss, p.accuracy) for p in result.points] == points
    assert (result.final.loss, result.final.accuracy) == points[-1][1:]


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_same_weights_losses_and_accuracies_as_the_tutorials_loop(train_set, momentum):
    net, result, _ = fit(train_set, momentum=momentum)
    assert_trained_as_the_tutorial_loop(train_set, net, result, {**HYPER, "momentum": momentum})
    assert len({p.accuracy for p in result.points}) > 1  # the windows differ: a real count


@pytest.mark.parametrize("change", ["tanh", "weight_norm"])
def test_an_edited_network_trains_as_the_tutorial_loop_trains_it(train_set, change):
    # Autograd follows Net wherever a researcher takes it: another activation, or a
    # reparametrised layer with a parameter more.
    class Edited(model.Net):
        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x))).flatten(1)
            x = torch.tanh(self.fc1(x)) if change == "tanh" else F.relu(self.fc1(x))
            return self.fc3(F.relu(self.fc2(x)))

    torch.manual_seed(HYPER["seed"])
    start = Edited()
    if change == "weight_norm":
        torch.nn.utils.parametrizations.weight_norm(start.fc1)
    net = copy.deepcopy(start)
    net, result, _ = fit(train_set, net=net)
    assert_trained_as_the_tutorial_loop(train_set, net, result, start=copy.deepcopy(start))


def test_log_points_fall_every_log_every_images_across_epochs(train_set):
    _, result, logged = fit(train_set)
    steps_per_epoch = 13  # 50 images in batches of 4: 12 full and one of 2
    assert result.steps == 2 * steps_per_epoch
    # Past 28, 56 and 84 images seen (the second epoch starts at 50), then the last window's end.
    assert [p.images for p in result.points] == [28, 58, 86, 100]
    assert [len(x) for _, x, _ in logged] == [4, 4, 4, 2]
    assert all(0 <= p.accuracy <= 1 and p.lr == HYPER["lr"] for p in result.points)
    assert [point for point, _, _ in logged] == result.points  # each with the batch that ended it
    assert result.final == result.points[-1]  # the final, partial window is logged too


@pytest.mark.parametrize("log_every", [28, 52])
def test_the_last_partial_window_averages_over_its_own_steps(train_set, log_every):
    # 100 images in 26 steps: the last window is partial (every 28: images 85 to 100; every 52:
    # 53 to 100), and the tutorial's loop averages it over its own steps.
    _, result, _ = fit(train_set, log_every=log_every)
    _, points = tutorial_loop(train_set, **{**HYPER, "log_every": log_every})
    assert (result.final.images, result.final.loss, result.final.accuracy) == points[-1]


def test_rerun_gives_identical_weights(train_set):
    assert torch.equal(weights(fit(train_set)[0]), weights(fit(train_set)[0]))


@pytest.mark.skipif("GenuineIntel" not in open("/proc/cpuinfo").read(),
                    reason="outside strict mode, MKL's products split by thread count on non-Intel "
                           "CPUs (seen on an AMD EPYC); the stage runs one thread below batch 256")
def test_thread_count_does_not_change_results(train_set):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = weights(fit(train_set, batch_size=16)[0])
        torch.set_num_threads(2)
        two = weights(fit(train_set, batch_size=16)[0])
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@pytest.mark.skipif(not torch.backends.mkl.is_available(),
                    reason="the thread-count guarantee at large batches rests on MKL's settings")
@pytest.mark.parametrize("pinned", ["1", "0"], ids=["pinned", "unpinned"])
def test_the_train_stage_gives_the_same_model_on_any_thread_count_at_large_batches(tmp_path,
                                                                                    pinned):
    # From a batch of about 768, MKL splits the linear layers' weight-gradient products across
    # threads. Pinned, MKL runs on one thread; unpinned, in its strict mode
    # (determinism.threaded_matrix_products). Either keeps the order fixed.
    mirror = tmp_path / "mirror"
    checksums = synthetic.write(mirror, n_train=2048, n_test=10)
    fetch.run(dest=tmp_path / "data", mirror=str(mirror), checksums=str(checksums), timeout=1,
              retries=0)
    write_params(tmp_path, batch_size=1024, log_every=1)
    models = {}
    for threads in ("1", "2"):
        out = tmp_path / f"threads-{threads}"
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts/train.py"), "--data", str(tmp_path / "data"),
             "--model", str(out / "model.pt"), "--metrics", str(out / "train.json"),
             "--provenance", str(out / "provenance.json"), "--plots", str(out / "loss.csv"),
             "--logdir", str(out / "runs")],
            cwd=tmp_path, env={**clean_env(), "OMP_NUM_THREADS": threads,
                               "FASHION_PORTABLE_CPU": pinned},
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        provenance = json.loads((out / "provenance.json").read_text())
        host = json.loads((out / "provenance.host.json").read_text())
        applies = pinned == "1" and portable_cpu.own_capability() in ("avx2", "avx512")
        expected = "COMPATIBLE" if applies else "AUTO,STRICT"
        assert (host["threads"], provenance["mkl_cbwr"]) == (int(threads), expected)
        models[threads] = (out / "model.pt").read_bytes()
    assert models["1"] == models["2"]


@pytest.mark.parametrize("params, got", [
    ([], "none"),
    ([torch.zeros(2), torch.zeros(2, dtype=torch.float64)], r"\{.*torch.float(32|64).*torch.float(32|64).*\}")],
    ids=["none", "two-dtypes"])
def test_sgd_refuses_parameters_it_cannot_keep_in_one_tensor(params, got):
    with pytest.raises(ValueError, match=f"^SGD needs parameters of one dtype and device, got {got}$"):
        training.SGD(params, lr=0.1, momentum=0.9)


def test_sgd_steps_as_torch_s_sgd_in_double_precision_too():
    torch.manual_seed(0)
    ours = [torch.randn(3, 2, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    theirs = [nn_param.clone().requires_grad_() for nn_param in ours]
    sgd, reference = training.SGD(ours, lr=0.1, momentum=0.9), torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in ours]
        sgd.step(grads)
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        reference.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(ours, theirs))


def test_seed_changes_results(train_set):
    assert not torch.equal(weights(fit(train_set)[0]), weights(fit(train_set, seed=4)[0]))


def test_batch_larger_than_dataset(train_set):
    _, result, _ = fit(train_set, batch_size=64, epochs=1, log_every=1)
    assert result.steps == 1 and [p.images for p in result.points] == [50]


def test_outputs_that_the_last_update_made_infinite_are_divergence_too(train_set):
    # One step of 50: its loss was finite, the update it made was not.
    with pytest.raises(TrainingError) as diverged:
        fit(train_set, lr=1e20, batch_size=50, epochs=1, log_every=1000)
    assert str(diverged.value) == ("training diverged: after the last update (step 0) the network's "
                                   "outputs were not finite (lr=1e+20); lower lr")


def test_divergence_stops_with_the_step(train_set):
    # No log point in 2 epochs of 13 steps: the end of the first epoch (step 12) catches it.
    with pytest.raises(TrainingError, match=r"training diverged: the loss was (nan|inf) by step 12 "
                                            r"\(lr=1e\+20\); lower lr"):
        fit(train_set, lr=1e20, log_every=1000)


def train_stage(data_dir, out, **changes) -> training.TrainResult:
    """The train stage in this process, every output under `out`."""
    params = {"seed": 3, "lr": 0.01, "momentum": 0.9, "batch_size": 4, "epochs": 1,
              "log_every": 28, "device": "cpu", **changes}
    return training.run(params=params, data_dir=data_dir, model_path=out / "model.pt",
                        metrics_path=out / "train.json", provenance_path=out / "prov.json",
                        plots_path=out / "loss.csv", logdir=out / "runs")


def test_the_stage_trains_on_one_thread_at_a_small_batch_and_records_it(tmp_path, data_dir):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train_stage(data_dir, tmp_path / "out")
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    host = json.loads((tmp_path / "out/prov.host.json").read_text())
    assert (threads, host["threads"]) == (1, 1)


def test_the_stage_draws_each_log_point_s_batch_and_reports_the_last_window(
        tmp_path, data_dir, monkeypatch):
    submitted = []

    class Recording(training.FigureRenderer):
        def submit(self, tag, images, labels, probs):
            submitted.append((images.clone(), labels.clone(), probs.clone()))
            super().submit(tag, images, labels, probs)

    monkeypatch.setattr(training, "FigureRenderer", Recording)
    out = tmp_path / "out"
    result = train_stage(data_dir, out)
    images, labels = data.load_split(data_dir, "train")
    batches = data.epoch_batches(len(images), 4, determinism.generator(3, "batch-order"))
    assert [p.images for p in result.points] == [28, 56, 84, 112, 140, 168, 196, 200]
    assert len(batches) == 50
    for point, (x, y, probs) in zip(result.points, submitted, strict=True):
        batch = batches[point.images // 4 - 1]  # each point's last mini-batch of 4
        assert torch.equal(x, data.normalize(images[batch]))
        assert torch.equal(y, labels[batch])
        assert probs.shape == (4, 10) and torch.allclose(probs.sum(1), torch.ones(4))
    # 200 images logged every 28 leave a last window of one step: logged, and the metrics' too.
    metrics = json.loads((out / "train.json").read_text())
    assert (result.final, metrics["steps"]) == (result.points[-1], 50)
    assert (metrics["loss"], metrics["accuracy"]) == (result.final.loss, result.final.accuracy)


@pytest.mark.parametrize("batch_size, xs", [
    (4, [60, 120, 180, 200]),
    # Batches of 32 pass 60, 120 and 180 at 64, 128 and 192; the last batch holds 8 images.
    (32, [64, 128, 192, 200]),
])
def test_curves_count_images_so_batch_sizes_compare_and_end_at_the_metrics(
        tmp_path, data_dir, batch_size, xs):
    out = tmp_path / "out"
    train_stage(data_dir, out, batch_size=batch_size, log_every=60)  # 200 images: a last window
    metrics = json.loads((out / "train.json").read_text())
    curve = (out / "loss.csv").read_text().splitlines()
    assert curve[0] == "images,loss,accuracy"
    rows = [r.split(",") for r in curve[1:]]
    assert [int(r[0]) for r in rows] == xs  # as many points at either batch size
    assert [float(r[1]) for r in rows[-1:]] == [metrics["loss"]]
    loss = scalars(out / "runs", "training loss")
    assert [step for step, _ in loss] == xs
    assert loss[-1][1] == pytest.approx(metrics["loss"], rel=1e-6)  # float32 in the event file
    accuracy = scalars(out / "runs", "training accuracy")
    assert accuracy == [(int(r[0]), pytest.approx(float(r[2]), rel=1e-6)) for r in rows]
    assert scalars(out / "runs", "learning rate") == [(x, pytest.approx(0.01)) for x in xs]
    assert [s for s, _ in summaries(out / "runs")[training.FIGURE_TAG]] == xs


@pytest.mark.parametrize("batch_size, steps", [(4, "50 steps"), (200, "1 step")])
def test_the_stage_trains_the_seed_s_network_and_says_how_fast(tmp_path, data_dir, capsys,
                                                               batch_size, steps):
    out = tmp_path / "out"
    train_stage(data_dir, out, batch_size=batch_size, log_every=201)
    err = capsys.readouterr().err
    assert ("Warning: log_every is 201 but this run trains on 200 images, so TensorBoard will show "
            "one loss point and figure") in err
    said = re.search(r"^trained (\d+ steps?) in (\d+\.\d\d) s \((\S+) steps/s\) on cpu$", err, re.M)
    assert said and said[1] == steps, err
    seconds, rate = float(said[2]), float(said[3])
    assert 0 < seconds < 300 and rate == pytest.approx(int(steps.split()[0]) / seconds, rel=0.2, abs=1)
    assert said[3] == f"{rate:.0f}" if rate >= 10 else len(said[3].replace(".", "").lstrip("0")) <= 2
    # The weights are those train() gives the seed's network; the record names these params.
    images, labels = data.load_split(data_dir, "train")
    net = model.initial_net(3)
    training.train(net, data.normalize(images), labels, lr=0.01, momentum=0.9, batch_size=batch_size,
                   epochs=1, log_every=201, seed=3)
    assert (out / "model.pt").read_bytes() == model.serialize(net)
    params = {"seed": 3, "lr": 0.01, "momentum": 0.9, "batch_size": batch_size, "epochs": 1,
              "log_every": 201, "device": "cpu"}
    assert json.loads((out / "prov.json").read_text())["params_sha256"] == hashlib.sha256(
        json.dumps(params, sort_keys=True).encode()).hexdigest()


def test_a_stage_that_cannot_write_one_output_replaces_none(tmp_path, data_dir):
    out = tmp_path / "out"
    (out / "model.pt").mkdir(parents=True)  # in the way of the weights, written after the logs
    with pytest.raises(IsADirectoryError) as refused:
        train_stage(data_dir, out)
    assert (refused.value.errno, refused.value.strerror, refused.value.filename) == (
        errno.EISDIR, "Is a directory", str(out / "model.pt"))
    assert sorted(p.name for p in out.iterdir()) == ["model.pt"]


def test_running_out_of_memory_is_one_sentence_and_writes_nothing(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(training, "train", allocate_too_much)
    out = tmp_path / "out"
    with pytest.raises(FashionError) as raised:
        train_stage(data_dir, out, seed=0)
    assert str(raised.value) == "out of cpu memory; lower batch_size (now 4), or close other programs"
    assert not out.exists()


def test_out_of_gpu_memory_names_what_else_frees_some():
    with pytest.raises(FashionError) as raised:
        with memory_errors_explained(torch.device("cuda"), 64):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert str(raised.value) == (
        "out of cuda memory; lower batch_size (now 64), or stop the other processes that hold GPU "
        "memory (nvidia-smi lists them), or set device: cpu")
    with pytest.raises(RuntimeError, match="^a bug$"):  # any other error goes on as it was
        with memory_errors_explained(torch.device("cpu")):
            raise RuntimeError("a bug")


def test_auto_takes_the_gpu_exactly_when_pytorch_sees_one():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert determinism.configure("auto") == torch.device(expected)


REFUSED_SWITCH_VALUES = ("off", "true", "yes", "00")


def test_fashion_cuda_graph_0_asks_for_the_eager_step_and_other_values_are_refused(monkeypatch):
    monkeypatch.delenv("FASHION_CUDA_GRAPH", raising=False)
    assert training._cuda_graph_wanted()
    for value, wanted in (("0", False), ("1", True), ("", True)):
        monkeypatch.setenv("FASHION_CUDA_GRAPH", value)
        assert training._cuda_graph_wanted() is wanted
    for value in REFUSED_SWITCH_VALUES:
        monkeypatch.setenv("FASHION_CUDA_GRAPH", value)
        with pytest.raises(FashionError, match=f"^FASHION_CUDA_GRAPH is '{value}'; set it to 1 or "
                                               "0, or unset it$"):
            training._cuda_graph_wanted()


def test_fashion_fill_uninitialized_1_keeps_pytorch_s_fill_and_other_values_are_refused(
        monkeypatch):
    try:
        for value, fill in (("1", True), ("0", False), ("", False)):
            monkeypatch.setenv("FASHION_FILL_UNINITIALIZED", value)
            determinism.configure("cpu")
            assert torch.utils.deterministic.fill_uninitialized_memory is fill
            if fill:  # and PyTorch fills indeed
                assert torch.empty(3).isnan().all()
        for value in REFUSED_SWITCH_VALUES:
            monkeypatch.setenv("FASHION_FILL_UNINITIALIZED", value)
            with pytest.raises(FashionError, match=f"^FASHION_FILL_UNINITIALIZED is '{value}'"):
                determinism.configure("cpu")
    finally:
        monkeypatch.delenv("FASHION_FILL_UNINITIALIZED")
        determinism.configure("cpu")


def test_configure_switches_determinism_on():
    determinism.configure("cpu")
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.utils.deterministic.fill_uninitialized_memory
    assert not torch.backends.cudnn.benchmark and not torch.backends.mkldnn.enabled
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"  # no TF32 convolutions on a GPU
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    with pytest.raises(RuntimeError, match="does not have a deterministic implementation"):
        torch.nn.functional.max_unpool2d(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2).long(), 2)


def test_log_every_that_logs_only_the_end_or_minutes_of_figures_is_warned_of():
    assert training.logging_warning(60000, 4000) is None  # the tutorial's 15 figures
    assert training.logging_warning(60000, 60) is None    # 1,000 figures: a minute's drawing
    assert training.logging_warning(200, 201).startswith(
        "log_every is 201 but this run trains on 200 images, so TensorBoard will show one loss "
        "point and figure, at the end")
    assert training.logging_warning(60000, 4).startswith(
        "log_every is 4, so this run logs 15000 figures, which take some 15 minutes to draw")
    assert "which take some 64 s to draw" in training.logging_warning(60000, 56)
    assert "which take some 2 minutes to draw" in training.logging_warning(60000, 28)
    assert training.logging_warning(200, 200).startswith("log_every is 200 but")  # one point too
    # 0.06 s a figure: 1,000 figures are 60 s, not warned of; 1,001 and 1,999 are; 2,000 are 120 s.
    assert training.logging_warning(1000, 1) is None
    assert training.logging_warning(1001, 1) == (
        "log_every is 1, so this run logs 1001 figures, which take some 60 s to draw, mostly after "
        "training, and are held in memory until then; raise log_every to log fewer.")
    assert "which take some 120 s to draw" in training.logging_warning(1999, 1)
    assert "which take some 2 minutes to draw" in training.logging_warning(2000, 1)
    assert "which take some 3 minutes to draw" in training.logging_warning(3000, 1)
    assert "which take some 60 minutes to draw" in training.logging_warning(60000, 1)
    assert training.logging_warning(200, 201) == (
        "log_every is 201 but this run trains on 200 images, so TensorBoard will show one loss "
        "point and figure, at the end; lower log_every to see training's course.")


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_the_cpu_trains_on_one_thread_below_a_batch_of_256_and_in_strict_mode_from_it(
        monkeypatch, pinned):
    if pinned and portable_cpu.own_capability() not in ("avx2", "avx512"):
        pytest.skip("this CPU has no AVX2 path to pin")
    monkeypatch.setenv(portable_cpu.SWITCH, "1" if pinned else "0")
    before = torch.get_num_threads()
    try:
        for batch_size in (255, 256):
            monkeypatch.delenv("MKL_CBWR", raising=False)
            torch.set_num_threads(2)
            training.configure_cpu(batch_size)
            # Pinned, MKL runs on one thread already (its domain setting), so no strict mode.
            assert (torch.get_num_threads(), os.environ.get("MKL_CBWR")) == (
                (1, None) if batch_size == 255 else (2, None if pinned else "AUTO,STRICT"))
    finally:
        torch.set_num_threads(before)
