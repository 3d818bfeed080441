"""The stage commands against what a user can get wrong: damaged data, bad params, a diverging
run, Ctrl-C and SIGTERM, foreign or hostile weights files. Each runs the real script in a
temporary directory, as `dvc repro` would, and checks the one-line message, the exit code, the
absence of a traceback, and that no output is half-written or lost.
"""

import contextlib
import io
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from fashion import fetch, model
from fashion.training import FIGURE_TAG
from tests.conftest import ROOT, load_script, make_dry_run, write_params
from tests.events import summaries
from tests.faults import assert_failed, assert_no_leftovers, clean_env, outputs, snapshot

pytestmark = pytest.mark.timeout(120)
TRAIN_OUTPUTS = ("models/model.pt", "metrics/train.json", "metrics/provenance/train.json",
                 "plots/train_loss.csv", "runs/train")
EVALUATE_OUTPUTS = ("metrics/evaluate.json", "metrics/provenance/evaluate.json",
                    "plots/confusion.csv", "plots/pr", "runs/evaluate")


@pytest.fixture(scope="module")
def fetched(dataset, tmp_path_factory) -> Path:
    """A data directory written by the real fetch stage from the synthetic mirror."""
    mirror, checksums = dataset
    out = tmp_path_factory.mktemp("fetched") / "fashion-mnist"
    fetch.run(dest=out, mirror=str(mirror), checksums=str(checksums), timeout=1, retries=0)
    return out


@pytest.fixture
def work(tmp_path, fetched) -> Path:
    """A stage's working directory: test params and a private copy of the fetched data."""
    shutil.copytree(fetched, tmp_path / "data/fashion-mnist")
    write_params(tmp_path)
    return tmp_path


def stage(name: str, cwd: Path, *args: str, env=None, timeout=100) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / f"scripts/{name}.py"), *args], cwd=cwd,
                          env=env or clean_env(), capture_output=True, text=True, timeout=timeout)


def assert_absent(cwd: Path, outputs) -> None:
    present = [path for path in outputs if (cwd / path).exists()]
    assert not present, f"outputs written despite the failure: {present}"
    assert_no_leftovers(cwd)


def one_line(done) -> str:
    """The error line; nothing else may have been printed."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    return lines[0]


# --- data changed after fetch --------------------------------------------------------------

def edit(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("script, name, damage, outputs", [
    ("train", "train-images-idx3-ubyte", edit, TRAIN_OUTPUTS),
    ("visualize", "train-images-idx3-ubyte", truncate, ("runs/visualize",)),
    ("evaluate", "t10k-images-idx3-ubyte", edit, EVALUATE_OUTPUTS),
], ids=["train-edited", "visualize-truncated", "evaluate-edited"])
def test_a_data_file_changed_since_fetch_is_refused_by_name(work, script, name, damage, outputs):
    if script == "evaluate":
        model.save(model.initial_net(0), work / "models/model.pt")
    damage(work / "data/fashion-mnist" / name)
    done = stage(script, work)
    assert_failed(done, f"data/fashion-mnist/{name} does not match its checksum in SHA256SUMS",
                  "run `dvc checkout --force data/fashion-mnist` or `dvc repro --force fetch`")
    one_line(done)
    assert_absent(work, outputs)


def test_a_damaged_checksum_manifest_is_one_line(work):
    (work / "data/fashion-mnist/SHA256SUMS").write_bytes(bytes(range(128, 256)))
    done = stage("train", work)
    assert_failed(done, "Error: data/fashion-mnist/SHA256SUMS is not a sha256sum-format text file")
    one_line(done)
    assert_absent(work, TRAIN_OUTPUTS)


def test_an_output_path_the_system_refuses_is_one_line_with_its_reason(work):
    (work / "runs").write_text("a file where the stage wants a directory")
    done = stage("visualize", work, "--logdir", "runs/visualize")
    assert_failed(done)
    assert "runs" in one_line(done)
    assert (work / "runs").read_text() == "a file where the stage wants a directory"
    assert_no_leftovers(work)


@pytest.mark.parametrize("name, option, outputs", [
    ("train", "--provenance", TRAIN_OUTPUTS), ("evaluate", "--provenance", EVALUATE_OUTPUTS),
])
def test_an_output_that_cannot_be_written_leaves_every_other_output_as_it_was(
        work, name, option, outputs):
    if name == "evaluate":
        assert stage("train", work).returncode == 0
    assert stage(name, work).returncode == 0
    write_params(work, lr=0.03)  # a run whose outputs would all differ
    before = snapshot(work)
    (work / "blocked").write_text("a file where the stage wants a directory")
    done = stage(name, work, option, "blocked/provenance.json")
    assert_failed(done, "Error: File exists: blocked")
    assert snapshot(work) == {**before, "blocked": b"a file where the stage wants a directory"}
    assert_no_leftovers(work)


def test_two_outputs_on_one_path_are_refused_before_anything_is_written(work):
    done = stage("train", work, "--metrics", "out.json", "--provenance", "out.json")
    assert_failed(done, "Error: out.json is given for two outputs, or one holds the other; give "
                        "each output a path of its own")
    assert_absent(work, TRAIN_OUTPUTS)
    assert not (work / "out.json").exists()
    assert_no_leftovers(work)


# --- params --------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"lr": "abc"}, "lr must be a number > 0 that float32 holds (up to about 3.4e+38), got 'abc'"),
    ({"lr": 0}, "lr must be a number > 0 that float32 holds (up to about 3.4e+38), got 0"),
    ({"lr": ".inf"}, "lr must be a number > 0 that float32 holds (up to about 3.4e+38), got inf"),
    ({"lr": 1e300}, "lr must be a number > 0 that float32 holds (up to about 3.4e+38), got 1e+300"),
    ({"batch_size": 0}, "batch_size must be an integer from 1 to 2**63 - 1, got 0"),
    ({"epochs": 0}, "epochs must be an integer from 1 to 2**63 - 1, got 0"),
    ({"momentum": 1}, "momentum must be a number in [0, 1), got 1"),
    ({"log_every": 0}, "log_every must be an integer from 1 to 2**63 - 1, got 0"),
    ({"learning_rate": 0.01}, "unknown key 'learning_rate'; did you mean 'lr'?"),
], ids=["lr-abc", "lr-0", "lr-inf", "lr-beyond-float32", "batch_size-0", "epochs-0", "momentum-1",
        "log_every-0", "unknown-key"])
def test_a_bad_param_is_one_line_naming_the_key(work, change, message):
    write_params(work, **change)
    done = stage("train", work)
    assert_failed(done, f"Error: params.yaml: {message}")
    one_line(done)
    assert_absent(work, TRAIN_OUTPUTS)


@pytest.mark.timeout(30)
def test_a_yaml_alias_bomb_in_params_is_one_line_at_once(work):
    # Nine levels of nine aliases under lr: 9**8 values once expanded, never expanded here.
    levels = ["&a0 [x]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    (work / "params.yaml").write_text(f"lr: [{', '.join(levels)}]\n")
    done = stage("visualize", work)
    assert_failed(done, "Error: params.yaml, line 1: YAML anchors and aliases (& and *) are not "
                        "accepted")
    one_line(done)


def test_a_params_file_that_is_not_utf8_is_one_line(work):
    (work / "params.yaml").write_bytes("lr: 0.01\n".encode("utf-16"))  # a Windows editor's "Unicode"
    done = stage("train", work)
    assert_failed(done, "Error: params.yaml is not UTF-8 text (byte 0): save it as UTF-8")
    one_line(done)
    assert_absent(work, TRAIN_OUTPUTS)


def test_every_stage_validates_the_whole_file(work):
    # visualize reads neither lr nor momentum, but a typo anywhere stops every stage.
    write_params(work, lr="abc")
    done = stage("visualize", work)
    assert_failed(done, "Error: params.yaml: lr must be a number > 0 that float32 holds (up to about "
                        "3.4e+38), got 'abc'")
    assert_absent(work, ("runs/visualize",))


def test_embedding_samples_above_the_dataset_size_is_refused_by_visualize(work):
    write_params(work, embedding_samples=201)  # the synthetic training set has 200 images
    done = stage("visualize", work)
    assert_failed(done, "embedding_samples is 201 but the training set has 200 images; "
                        "choose at most 200")
    one_line(done)
    assert_absent(work, ("runs/visualize",))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line(work):
    write_params(work, device="cuda")
    done = stage("train", work)
    assert_failed(done, "device is 'cuda' but PyTorch", "sees no CUDA GPU here; "
                        "set device to auto or cpu")
    one_line(done)
    assert_absent(work, TRAIN_OUTPUTS)


@pytest.mark.parametrize("name, switch", [("visualize", "FASHION_FILL_UNINITIALIZED"),
                                          ("train", "FASHION_CUDA_GRAPH"),
                                          ("train", "FASHION_FILL_UNINITIALIZED"),
                                          ("evaluate", "FASHION_DEBUG")])
def test_a_switch_set_to_neither_1_nor_0_is_one_line(work, name, switch):
    done = stage(name, work, env=clean_env(**{switch: "off"}))
    assert done.returncode == 1
    assert one_line(done) == f"Error: {switch} is 'off'; set it to 1 or 0, or unset it"
    assert_absent(work, ("runs", "models", "metrics"))


def test_fashion_debug_shows_the_traceback(work):
    write_params(work, lr="abc")
    done = stage("train", work, env=clean_env(FASHION_DEBUG="1"))
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ParamsError: params.yaml: lr must be" in done.stderr
    quiet = stage("train", work, env=clean_env(FASHION_DEBUG="0"))
    assert_failed(quiet, "Error: params.yaml: lr must be")


def test_a_logdir_holding_the_working_directory_is_refused_and_nothing_moves(work):
    before = snapshot(work)
    done = stage("visualize", work, "--logdir", str(work))
    assert_failed(done, f"Error: refusing to replace {work}: it holds the working directory; "
                        "give the output a directory of its own")
    assert snapshot(work) == before


@pytest.mark.parametrize("script, option", [("visualize", "--logdir"), ("evaluate", "--pr-dir"),
                                            ("evaluate", "--logdir"), ("fetch", "--out")])
def test_an_output_option_naming_someone_s_directory_is_refused_and_nothing_moves(
        work, script, option):
    home = work / "home"
    (home / "thesis").mkdir(parents=True)
    (home / "thesis/chapter1.tex").write_bytes(b"years of work")
    (home / ".bashrc").write_bytes(b"alias ll='ls -l'")
    if script == "evaluate":
        assert stage("train", work).returncode == 0
    before = snapshot(work)
    done = stage(script, work, option, str(home))
    assert_failed(done, f"Error: refusing to replace {home}: it holds .bashrc, which this stage "
                        "does not write; choose another path")
    assert snapshot(work) == before


def test_a_stage_s_own_outputs_restored_or_from_an_earlier_run_are_replaced(work):
    for _ in range(2):
        assert stage("visualize", work).returncode == 0
    assert stage("train", work).returncode == 0
    for _ in range(2):
        assert stage("evaluate", work).returncode == 0


# --- training ------------------------------------------------------------------------------

def test_divergence_stops_naming_the_step_and_writes_no_model(work):
    write_params(work, lr=100)
    done = stage("train", work)
    assert_failed(done)
    assert re.search(r"^Error: training diverged: the loss was (nan|inf) by step \d+ \(lr=[^)]+\); "
                     r"lower lr$", done.stderr, re.MULTILINE), done.stderr
    assert_absent(work, TRAIN_OUTPUTS)


def test_a_last_update_that_diverges_fails_and_writes_no_model(work):
    # One step over the 200 training images: its loss, taken before the update, is finite.
    write_params(work, lr=1e30, batch_size=200, log_every=1)
    done = stage("train", work)
    assert_failed(done, "Error: training diverged: after the last update (step 0) the "
                        "network's outputs were not finite (lr=1e+30); lower lr")
    assert_absent(work, TRAIN_OUTPUTS)


def test_evaluate_refuses_a_model_with_non_finite_outputs_in_one_line(work):
    net = model.initial_net(0)
    with torch.no_grad():
        net.fc3.bias[3] = float("nan")
    model.save(net, work / "models/model.pt")
    done = stage("evaluate", work)
    assert_failed(done, "Error: models/model.pt gives outputs that are not finite numbers, as a "
                        "model from diverged training does: retrain it with a lower lr")
    one_line(done)
    assert_absent(work, EVALUATE_OUTPUTS)


def test_log_every_beyond_the_run_warns_that_only_the_end_will_be_logged(work):
    write_params(work, log_every=200)  # the test params give 200 images
    done = stage("train", work)
    assert done.returncode == 0, done.stderr
    assert ("Warning: log_every is 200 but this run trains on 200 images, so TensorBoard will "
            "show one loss point and figure, at the end") in done.stderr
    assert (work / "plots/train_loss.csv").read_text().splitlines()[1].startswith("200,")
    assert [step for step, _ in summaries(work / "runs/train")[FIGURE_TAG]] == [200]

    write_params(work, log_every=199)
    done = stage("train", work)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
    assert [step for step, _ in summaries(work / "runs/train")[FIGURE_TAG]] == [200]


def interrupt_training(work: Path, signum: int) -> subprocess.CompletedProcess:
    """Start a long training run, wait until its first epoch is under way, send `signum`."""
    write_params(work, epochs=1000)
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts/train.py")], cwd=work,
                               env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    stderr = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(process.stderr.readline, "")))
    reader.start()
    deadline = time.monotonic() + 60
    while not any("epoch 1/1000" in line for line in stderr) and time.monotonic() < deadline:
        assert process.poll() is None, "".join(stderr)
        time.sleep(0.05)
    time.sleep(0.5)  # some steps and a log point into the epoch
    assert process.poll() is None, "".join(stderr)
    process.send_signal(signum)
    stdout = process.stdout.read()
    process.wait(timeout=30)
    reader.join(timeout=5)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, "".join(stderr))


@pytest.mark.parametrize("signum, code, message", [
    (signal.SIGINT, 130, "Interrupted; this stage replaced none of its outputs."),
    (signal.SIGTERM, 143, "Terminated; this stage replaced none of its outputs."),
], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_epoch_keeps_the_previous_outputs_byte_for_byte(work, signum, code, message):
    finished = stage("train", work)
    assert finished.returncode == 0, finished.stderr
    before = outputs(work, TRAIN_OUTPUTS)
    done = interrupt_training(work, signum)
    assert_failed(done, message, code=code)
    assert outputs(work, TRAIN_OUTPUTS) == before
    assert_no_leftovers(work)


def test_a_signal_during_the_first_run_leaves_no_outputs(work):
    done = interrupt_training(work, signal.SIGTERM)
    assert_failed(done, "Terminated;", code=143)
    assert_absent(work, TRAIN_OUTPUTS)


def loading_torch(pid: int) -> bool:
    """Whether the process has mapped libtorch: it is inside `import torch`, a second's work."""
    with contextlib.suppress(FileNotFoundError):
        return "libtorch_cpu" in Path(f"/proc/{pid}/maps").read_text()
    return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("name", ["visualize", "train", "evaluate"])
def test_ctrl_c_while_the_stage_imports_torch_is_one_line_too(work, name):
    process = subprocess.Popen([sys.executable, str(ROOT / f"scripts/{name}.py")], cwd=work,
                               env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 30
    while not loading_torch(process.pid):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.001)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_failed(done, "Interrupted before the stage started; nothing was written.", code=130)
    assert_absent(work, TRAIN_OUTPUTS + EVALUATE_OUTPUTS)


# --- loading weights -----------------------------------------------------------------------

class _RunsCode:
    """Unpickling this would create a directory: the proof that a weights file ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def other_architecture(path: Path) -> None:
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)


def damaged(path: Path) -> None:
    model.save(model.initial_net(0), path)
    path.write_bytes(path.read_bytes()[:2000])


def cut_archive(path: Path) -> None:
    # Cut inside the archive's data: torch raises OSError (EINVAL), not a loading error.
    model.save(model.initial_net(0), path)
    path.write_bytes(path.read_bytes()[:20000])


def a_tensor(path: Path) -> None:
    torch.save(torch.zeros(3), path)


def not_a_model(path: Path) -> None:
    path.write_text("these are not the weights you are looking for\n")


def empty(path: Path) -> None:
    path.write_bytes(b"")


def runs_code(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"conv1.weight": _RunsCode(path.parent / "code-ran")}, buffer, pickle_module=pickle)
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("write, message", [
    (other_architecture, "holds weights of another architecture"),
    (a_tensor, "holds weights of another architecture"),
    (damaged, "is not a loadable weights file"),
    (cut_archive, "is not a loadable weights file"),
    (not_a_model, "is not a loadable weights file"),
    (empty, "is not a loadable weights file"),
    (runs_code, "is not a loadable weights file"),
], ids=["other-architecture", "a-tensor", "truncated", "cut-archive", "text", "empty", "runs-code"])
def test_evaluate_refuses_a_bad_weights_file_in_one_line(work, write, message):
    path = work / "models/model.pt"
    path.parent.mkdir()
    write(path)
    done = stage("evaluate", work)
    assert_failed(done, f"Error: models/model.pt {message}",
                  "restore it with `dvc checkout --force models/model.pt` or retrain with "
                  "`dvc repro --force --single-item train`")
    one_line(done)
    assert not (work / "models/code-ran").exists(), "loading the weights ran code"
    assert_absent(work, EVALUATE_OUTPUTS)


def test_the_code_running_file_would_run_code_if_loaded_unsafely(tmp_path):
    # The runs-code case above proves something only if its file does run code when loaded
    # without weights_only.
    path = tmp_path / "model.pt"
    runs_code(path)
    torch.load(path, weights_only=False)
    assert (tmp_path / "code-ran").is_dir()


# --- serving -------------------------------------------------------------------------------

@pytest.mark.parametrize("target, prefix", [("tensorboard", "tensorboard "),
                                            ("tensorboard-exps", "python scripts/tensorboard_exps.py "),
                                            ("docker-tensorboard", "docker run ")])
@pytest.mark.parametrize("args, env, host, port, logdir", [
    ((), {}, "127.0.0.1", "6006", "runs"),
    (("HOST=0.0.0.0", "PORT=7007", "LOGDIR=logs"), {}, "0.0.0.0", "7007", "logs"),
    # Some shells and container images export HOST: it must not open the server to the network.
    ((), {"HOST": "0.0.0.0", "PORT": "7007", "LOGDIR": "elsewhere"}, "127.0.0.1", "6006", "runs"),
], ids=["default", "command-line", "environment"])
def test_tensorboard_binds_loopback_unless_host_is_given_on_the_command_line(
        target, prefix, args, env, host, port, logdir):
    command, = [line for line in make_dry_run(target, *args, env=env) if line.startswith(prefix)]
    if target == "docker-tensorboard":
        assert f'-p "{host}:{port}:6006"' in command and f'--logdir "{logdir}"' in command
    else:
        assert f"--host {host} " in command + " " and f"--port {port}" in command
    if target == "tensorboard":
        assert f'--logdir "{logdir}"' in command


# --- gathering experiments -------------------------------------------------------------------

def test_gathering_experiments_outside_a_dvc_repository_is_one_line(tmp_path):
    done = stage("tensorboard_exps", tmp_path, "--out", "logs", "--no-serve")
    line = one_line(done)
    assert_failed(done, "Error: `dvc exp show` failed: you are not inside of a DVC repository")
    assert "[" not in line and not (tmp_path / "logs").exists()


def test_gathering_into_a_used_directory_is_refused(tmp_path):
    (tmp_path / "logs/gone (lr=0.5)").mkdir(parents=True)  # an experiment removed since
    done = stage("tensorboard_exps", tmp_path, "--out", "logs", "--no-serve")
    assert one_line(done) == "Error: --out logs is not empty; name a new directory or empty it first"
    assert_failed(done)


def test_make_tensorboard_exps_passes_the_flags_through():
    assert ("python scripts/tensorboard_exps.py --host 127.0.0.1 --port 6006 -- "
            "--samples_per_plugin images=1000") in make_dry_run("tensorboard-exps")


def test_tensorboard_arguments_with_no_serve_are_refused(tmp_path):
    done = stage("tensorboard_exps", tmp_path, "--out", "logs", "--no-serve", "--",
                 "--samples_per_plugin", "images=1000")
    assert done.returncode == 2 and "make no sense with --no-serve" in done.stderr


def test_a_one_step_run_says_so_and_the_benchmark_reads_it(work):
    write_params(work, batch_size=10**6)  # the whole training set in one mini-batch
    done = stage("train", work)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^trained 1 step in [\d.]+ s \(", done.stderr, re.M), done.stderr
    assert load_script("bench").trained(done.stderr)[0] == 1


# --- a signal after the outputs were replaced -----------------------------------------------

LATE_SIGNAL = """
import os, signal, sys
import click
from fashion import cli, fileio

def signal_self():
    os.kill(os.getpid(), signal.{name})

if "{moment}" == "cleanup":
    # The moment after the outputs were all replaced, while the work directories go.
    remove_work = fileio.Outputs._remove_work
    fileio.Outputs._remove_work = lambda self: (signal_self(), remove_work(self))

@click.command()
@cli.stage_command
def main():
    with fileio.outputs() as out:
        out.file("result.txt", b"new")
    signal_self()  # after the replacement, before the command returns
    print("unreachable once the signal has been handled", file=sys.stderr)

main()
"""


@pytest.mark.parametrize("moment", ["returning", "cleanup"])
@pytest.mark.parametrize("name, what", [("SIGINT", "Interrupted"), ("SIGTERM", "Terminated")])
def test_a_signal_after_every_output_was_replaced_reports_success(tmp_path, name, what, moment):
    (tmp_path / "result.txt").write_bytes(b"previous")
    script = LATE_SIGNAL.replace("{name}", name).replace("{moment}", moment)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                          env=clean_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (f"{what} after this stage had replaced all its outputs; they are new "
                           "and complete.\n")
    assert (tmp_path / "result.txt").read_bytes() == b"new"
    assert_no_leftovers(tmp_path)


def sigint_caught(pid: int) -> bool:
    """Whether the process has a handler for SIGINT (false once Python has begun to exit, where
    it stops running handlers)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(re.search(r"^SigCgt:\s*(\w+)$", status, re.MULTILINE)[1], 16)
    return bool(caught >> (signal.SIGINT - 1) & 1)


def outputs_in_place(work: Path) -> bool:
    """The last output is there and the work directories are gone."""
    return (work / "metrics/provenance/train.json").exists() and not list(work.rglob(".*.tmp-*"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("moment", ["outputs-in-place", "exiting"])
def test_ctrl_c_just_after_training_replaced_its_outputs_reports_success(work, moment):
    """A real train run, interrupted the moment its outputs are all in place, or once the process
    has begun to exit (it no longer handles SIGINT): it must not report failure or die of it."""
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts/train.py")], cwd=work,
                               env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 60
    while not outputs_in_place(work):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.001)
    if moment == "exiting":
        while sigint_caught(process.pid):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.001)
    assert process.poll() is None, "the run ended before the signal could be sent"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert process.returncode == 0, stderr
    last = stderr.strip().splitlines()[-1]
    if moment == "exiting":  # ignored by then: the run ends as it would have
        assert last.startswith("trained 50 steps in "), stderr
    else:  # handled, or ignored if the process had begun to exit meanwhile
        assert (last == "Interrupted after this stage had replaced all its outputs; they are new "
                        "and complete." or last.startswith("trained 50 steps in ")), stderr
    assert all((work / path).exists() for path in TRAIN_OUTPUTS)
    assert_no_leftovers(work)


# --- a full disk ------------------------------------------------------------------------------

def file_size_limit(limit: int):
    """A process's writes failing past `limit` bytes per file, as on a full disk (Python ignores
    SIGXFSZ, so the write raises EFBIG, "File too large", without a file name, as ENOSPC does)."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_write_that_fails_for_space_names_the_output_in_one_line(work):
    done = subprocess.run([sys.executable, str(ROOT / "scripts/train.py")], cwd=work,
                          env=clean_env(), capture_output=True, text=True, timeout=100,
                          preexec_fn=file_size_limit(20_000))
    assert_failed(done)
    assert "Exception in thread" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "Error: File too large: runs/train"
    assert_absent(work, TRAIN_OUTPUTS)
    assert_no_leftovers(work)


def test_a_file_output_that_fails_for_space_is_named(tmp_path):
    write = "from fashion import fileio; fileio.write_bytes('metrics.json', b'x' * 5000)"
    done = subprocess.run([sys.executable, "-c", write], cwd=tmp_path,
                          env=clean_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=30, preexec_fn=file_size_limit(1000))
    assert "OSError: [Errno 27] File too large: 'metrics.json'" in done.stderr, done.stderr
    assert not (tmp_path / "metrics.json").exists()
    assert_no_leftovers(tmp_path)


EARLY_SIGNAL = """
import os, signal
import click
from fashion import cli, fileio

@click.command()
@cli.stage_command
def main():
    with fileio.outputs() as out:
        out.file("result.txt", b"new")
        os.kill(os.getpid(), signal.SIGINT)  # before the replacement

main()
"""


SIGNAL_BEFORE_HOLDING = """
import os, signal
import click
from fashion import cli, fileio

held = fileio._signals_held

def interrupted_first():  # Ctrl-C in the instant between the block's end and the holding
    os.kill(os.getpid(), signal.SIGINT)
    return held()

fileio._signals_held = interrupted_first

@click.command()
@cli.stage_command
def main():
    with fileio.outputs() as out:
        out.file("result.txt", b"new")

main()
"""


def test_an_interrupt_just_before_the_signals_are_held_leaves_no_work_directory(tmp_path):
    (tmp_path / "result.txt").write_bytes(b"previous")
    done = subprocess.run([sys.executable, "-c", SIGNAL_BEFORE_HOLDING], cwd=tmp_path,
                          env=clean_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=30)
    assert_failed(done, "Interrupted; this stage replaced none of its outputs.", code=130)
    assert (tmp_path / "result.txt").read_bytes() == b"previous"
    assert_no_leftovers(tmp_path)


@pytest.mark.parametrize("under_dvc, message", [
    (False, "Interrupted; this stage replaced none of its outputs.\n"),
    (True, "Interrupted; this stage wrote none of its outputs, and DVC had removed the previous "
           "ones before running it: `dvc checkout` brings them back.\n")], ids=["by-hand", "dvc"])
def test_an_interrupt_says_what_became_of_the_previous_outputs(tmp_path, under_dvc, message):
    env = clean_env(PYTHONPATH=str(ROOT))
    env.pop("DVC_STAGE", None)
    if under_dvc:
        env["DVC_STAGE"] = "train"  # what DVC sets for a stage's command
    done = subprocess.run([sys.executable, "-c", EARLY_SIGNAL], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 130 and done.stderr == message, done.stderr
    assert not (tmp_path / "result.txt").exists()


def test_a_python_without_the_projects_packages_is_told_in_one_line_to_use_the_venv(tmp_path):
    # What `.venv/bin/dvc repro` does when the shell's own python comes first on PATH.
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    for stage in ("fetch", "visualize", "train", "evaluate"):
        done = subprocess.run([str(bare / "bin/python"), str(ROOT / f"scripts/{stage}.py")],
                              cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                              timeout=60)
        assert_failed(done, "has no click, numpy, ruamel, torch", ". .venv/bin/activate")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare"]
