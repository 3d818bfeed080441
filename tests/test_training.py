import hashlib
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fashion import data, determinism, fetch, model, synthetic, training
from fashion.errors import FashionError, TrainingError, memory_errors_explained
from tests.conftest import ROOT, write_params
from tests.faults import allocate_too_much, clean_env

HYPER = dict(lr=0.01, momentum=0.9, batch_size=4, epochs=2, log_every=7, seed=3)


@pytest.fixture(scope="module")
def train_set():
    images, labels = synthetic.make_split(50, np.random.default_rng(0))
    return data.normalize(torch.from_numpy(images)), torch.from_numpy(labels.astype(np.int64))


def fit(train_set, net=None, by_hand=True, **changes):
    """`train` as the train stage calls it: with the hand-written backward where it applies."""
    determinism.configure("cpu")
    hyper = {**HYPER, **changes}
    net = model.initial_net(hyper["seed"]) if net is None else net
    logged = []
    result = training.train(net, *train_set, **hyper, by_hand=by_hand,
                            on_log=lambda point, x, y: logged.append((point, x.clone(), y.clone())))
    return net, result, logged


def weights(net):
    return torch.nn.utils.parameters_to_vector(net.parameters()).detach()


def tutorial_loop(train_set, lr, momentum, batch_size, epochs, log_every, seed, net=None):
    """The tutorial's loop as written, over the same batches: the reference for `train`."""
    images, labels = train_set
    net = model.initial_net(seed) if net is None else net
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    order = determinism.generator(seed, "batch-order")
    points, running, right, seen, step = [], 0.0, 0, 0, 0
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
            step += 1
            if step % log_every == 0:
                points.append((step - 1, running / log_every, right / seen))
                running, right, seen = 0.0, 0, 0
    # The last window, which the tutorial drops: what a partial one averages over is its own steps.
    window = step % log_every or log_every
    final = (step - 1, running / window, right / seen) if seen else points[-1]
    return net, points, final


def assert_trained_as_the_tutorial_loop(train_set, net, result, hyper=HYPER, start=None):
    """`train`'s weights and log points are those of the tutorial's loop from `start`'s weights."""
    reference, points, final = tutorial_loop(train_set, **hyper, net=start)
    assert torch.equal(weights(net), weights(reference))
    assert [(p.step, p.loss, p.accuracy) for p in result.points] == points
    assert (result.final.step, result.final.loss, result.final.accuracy) == final


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_same_weights_losses_and_accuracies_as_the_tutorials_loop(train_set, momentum):
    net, result, _ = fit(train_set, momentum=momentum)
    assert_trained_as_the_tutorial_loop(train_set, net, result, {**HYPER, "momentum": momentum})
    assert len({p.accuracy for p in result.points}) > 1  # the windows differ: a real count


def test_the_hand_written_backward_gives_autograd_s_bits(train_set):
    images, labels = train_set
    before = torch.get_num_threads()
    try:
        # At the initial weights and at trained ones, on one thread and two, on batches of 1, 4
        # and 7, and of 16 and 48, for which PyTorch may choose other convolution kernels.
        for net in (model.initial_net(3), fit(train_set)[0]):
            params = [p.detach() for p in net.parameters()]
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for n in (1, 4, 7, 16, 48):
                    ours = training._by_hand(params, images[:n], labels[:n])
                    theirs = training._autograd(net)(images[:n], labels[:n])
                    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
                    assert all(torch.equal(a, b) for a, b in zip(ours[2], theirs[2], strict=True))
    finally:
        torch.set_num_threads(before)


def count_by_hand(monkeypatch) -> list:
    """The calls of the hand-written backward from here on, one item each."""
    calls, by_hand = [], training._by_hand
    monkeypatch.setattr(training, "_by_hand", lambda *args: calls.append(1) or by_hand(*args))
    return calls


def test_the_net_trains_with_the_hand_written_backward(train_set, monkeypatch, capsys):
    calls = count_by_hand(monkeypatch)
    _, result, _ = fit(train_set)
    assert len(calls) == result.steps + 1  # the check, then every step
    assert "Note" not in capsys.readouterr().err


def test_the_train_stage_asks_for_the_hand_written_backward(tmp_path, data_dir, monkeypatch,
                                                           capsys):
    calls = count_by_hand(monkeypatch)
    result = train_stage(data_dir, tmp_path)
    assert len(calls) == result.steps + 1
    assert "Note" not in capsys.readouterr().err


def test_train_uses_autograd_unless_asked_or_for_another_net(train_set, monkeypatch, capsys):
    calls = count_by_hand(monkeypatch)
    fit(train_set, by_hand=False)
    assert calls == [] and "Note" not in capsys.readouterr().err

    class Wider(model.Net):
        pass

    fit(train_set, net=Wider())
    assert calls == []
    assert "Note: training._by_hand is written for model.Net, not Wider; training uses autograd" \
        in capsys.readouterr().err


def edited_model(tmp_path, monkeypatch, old: str = "", new: str = ""):
    """fashion/model.py with one edit (or none), imported as a module of its own."""
    source = (ROOT / "fashion/model.py").read_text()
    assert source.count(old) == 1 or not old
    path = tmp_path / "edited_model.py"
    path.write_text(source.replace(old, new))
    spec = importlib.util.spec_from_file_location("edited_model", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "edited_model", module)  # where inspect looks for its source
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("old, new", [
    # ReLU6 is ReLU below 6, so at the initial weights a check of the bits alone could pass it.
    ("x = F.relu(self.fc1(x))", "x = F.relu6(self.fc1(x))"),
    # Outside the class: a reparametrised layer, with one parameter more.
    ("        return Net()",
     "        net = Net()\n        nn.utils.parametrizations.weight_norm(net.fc1)\n        return net"),
])
def test_an_edited_model_trains_with_autograd_and_the_note_says_what_to_update(
        train_set, tmp_path, monkeypatch, capsys, old, new):
    edited = edited_model(tmp_path, monkeypatch, old, new)
    monkeypatch.setattr(training, "model", edited)
    calls = count_by_hand(monkeypatch)
    net, result, _ = fit(train_set, net=edited.initial_net(HYPER["seed"]))
    source = hashlib.sha256((tmp_path / "edited_model.py").read_bytes()).hexdigest()
    assert f"set BY_HAND_MODEL_SHA256 in fashion/training.py to {source}; training uses autograd" \
        in capsys.readouterr().err
    assert calls == []
    assert_trained_as_the_tutorial_loop(train_set, net, result,
                                        start=edited.initial_net(HYPER["seed"]))


def test_a_model_without_its_source_file_trains_with_autograd(train_set, tmp_path, monkeypatch,
                                                              capsys):
    unread = edited_model(tmp_path, monkeypatch)
    (tmp_path / "edited_model.py").unlink()  # imported, but its source is gone
    monkeypatch.setattr(training, "model", unread)
    calls = count_by_hand(monkeypatch)
    fit(train_set, net=unread.initial_net(HYPER["seed"]))
    assert calls == []
    assert "Note: fashion/model.py cannot be read to check that training._by_hand is written for " \
        "it; training uses autograd" in capsys.readouterr().err


@pytest.mark.parametrize("slip", ["loss", "outputs", *range(10)])  # or the gradient of parameter i
def test_a_hand_written_backward_off_autograd_s_bits_is_not_used(train_set, monkeypatch, capsys,
                                                                  slip):
    by_hand = training._by_hand

    def slipped(params, x, y):
        loss, out, grads = by_hand(params, x, y)
        nudge = 1 + 2**-20  # a few units in the last place
        if slip == "loss":
            loss = loss * nudge
        elif slip == "outputs":
            out = out * nudge
        else:
            grads = [g * nudge if i == slip else g for i, g in enumerate(grads)]
        return loss, out, grads

    monkeypatch.setattr(training, "_by_hand", slipped)
    net, result, _ = fit(train_set)
    assert "training._by_hand does not give the bits of autograd" in capsys.readouterr().err
    assert_trained_as_the_tutorial_loop(train_set, net, result)


def test_log_points_fall_every_log_every_steps_across_epochs(train_set):
    _, result, logged = fit(train_set)
    steps_per_epoch = 13  # 50 images in batches of 4: 12 full and one of 2
    assert result.steps == 2 * steps_per_epoch
    assert [p.step for p in result.points] == [6, 13, 20]
    assert [len(x) for _, x, _ in logged] == [4, 4, 4]
    assert all(0 <= p.accuracy <= 1 and p.lr == HYPER["lr"] for p in result.points)
    assert result.final.step == 25  # the final, partial window


@pytest.mark.parametrize("log_every", [7, 13])
def test_the_last_partial_window_averages_over_its_own_steps(train_set, log_every):
    # 26 steps: logged every 7, the last window holds steps 21 to 25, five of them (every 13: none).
    _, result, _ = fit(train_set, log_every=log_every)
    _, _, final = tutorial_loop(train_set, **{**HYPER, "log_every": log_every})
    assert (result.final.step, result.final.loss, result.final.accuracy) == final
    assert (result.final == result.points[-1]) == (log_every == 13)


def test_rerun_gives_identical_weights(train_set):
    assert torch.equal(weights(fit(train_set)[0]), weights(fit(train_set)[0]))


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
                    reason="the thread-count guarantee at large batches rests on MKL's strict mode")
def test_the_train_stage_gives_the_same_model_on_any_thread_count_at_large_batches(tmp_path):
    # From a batch of about 768, MKL splits the linear layers' weight-gradient products across
    # threads; the stage's strict mode (determinism.strict_matrix_products) keeps the order fixed.
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
            cwd=tmp_path, env={**clean_env(), "OMP_NUM_THREADS": threads}, capture_output=True,
            text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        provenance = json.loads((out / "provenance.json").read_text())
        assert (provenance["threads"], provenance["mkl_cbwr"]) == (int(threads), "AUTO,STRICT")
        models[threads] = (out / "model.pt").read_bytes()
    assert models["1"] == models["2"]


@pytest.mark.parametrize("params", [[], [torch.zeros(2), torch.zeros(2, dtype=torch.float64)]],
                         ids=["none", "two-dtypes"])
def test_sgd_refuses_parameters_it_cannot_keep_in_one_tensor(params):
    with pytest.raises(ValueError, match="one dtype and device"):
        training.SGD(params, lr=0.1, momentum=0.9)


def test_seed_changes_results(train_set):
    assert not torch.equal(weights(fit(train_set)[0]), weights(fit(train_set, seed=4)[0]))


def test_batch_larger_than_dataset(train_set):
    _, result, _ = fit(train_set, batch_size=64, epochs=1, log_every=1)
    assert result.steps == 1 and [p.step for p in result.points] == [0]


def test_divergence_stops_with_the_step(train_set):
    # No log point in 2 epochs of 13 steps: the end of the first epoch (step 12) catches it.
    with pytest.raises(TrainingError, match=r"training diverged: the loss was (nan|inf) by step 12 "
                                            r"\(lr=1e\+20\); lower lr"):
        fit(train_set, lr=1e20, log_every=1000)


def train_stage(data_dir, out, **changes) -> training.TrainResult:
    """The train stage in this process, every output under `out`."""
    params = {"seed": 3, "lr": 0.01, "momentum": 0.9, "batch_size": 4, "epochs": 1,
              "log_every": 7, "device": "cpu", **changes}
    return training.run(params=params, data_dir=data_dir, model_path=out / "model.pt",
                        metrics_path=out / "train.json", provenance_path=out / "prov.json",
                        plots_path=out / "loss.csv", logdir=out / "runs")


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
    assert [p.step for p in result.points] == [6, 13, 20, 27, 34, 41, 48] and len(batches) == 50
    for point, (x, y, probs) in zip(result.points, submitted, strict=True):
        assert torch.equal(x, data.normalize(images[batches[point.step]]))
        assert torch.equal(y, labels[batches[point.step]])
        assert probs.shape == (4, 10) and torch.allclose(probs.sum(1), torch.ones(4))
    # 50 steps logged every 7 leave a last window of one step: the metrics report it.
    metrics = json.loads((out / "train.json").read_text())
    assert (result.final.step, metrics["steps"]) == (49, 50)
    assert metrics["loss"] == result.final.loss != result.points[-1].loss
    assert metrics["accuracy"] == result.final.accuracy


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


def test_log_every_that_logs_nothing_or_minutes_of_figures_is_warned_of():
    assert training.logging_warning(15000, 1000) is None  # the tutorial's 15 figures
    assert training.logging_warning(15000, 15) is None    # 1,000 figures: a minute's drawing
    assert training.logging_warning(50, 51).startswith("log_every is 51 but this run has 50 "
                                                       "mini-batches, so no loss points")
    assert training.logging_warning(15000, 1).startswith(
        "log_every is 1, so this run logs 15000 figures, which take some 15 minutes to draw")
    assert "which take some 64 s to draw" in training.logging_warning(15000, 14)
    assert "which take some 2 minutes to draw" in training.logging_warning(15000, 7)
