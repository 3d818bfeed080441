"""Experiments from many machines in one place: clones of one bare git repository sharing one DVC
remote run a sweep's tasks and push them; another clone collects them (docs/scale-out.md)."""

import json
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from fashion import experiments, sweep
from tests.conftest import ROOT, dvc, git, run
from tests.faults import assert_failed
from tests.test_reproduction import snapshot

# Three tasks: two machines run one each at once; the third point diverges, as a task can.
GRID = ("-S", "lr=0.01,0.05,1e30")


def sweep_task(command: str, repo: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts/sweep_task.py"), command, "--repo", str(repo),
            *GRID, *args]


def clone(origin: Path, path: Path) -> Path:
    git(origin.parent, "clone", "-q", str(origin), str(path))
    return path


@pytest.fixture(scope="module")
def shared(pipeline, env, tmp_path_factory) -> dict:
    """A bare `origin`, one DVC directory remote, the baseline's results pushed to both; two
    clones ("machines") ran tasks 0 and 1 at once, then the first ran task 2, which failed."""
    root = tmp_path_factory.mktemp("shared")
    origin, storage = root / "origin.git", root / "storage"
    git(root, "init", "-q", "--bare", "-b", "main", str(origin))
    seed = root / "laptop"
    shutil.copytree(pipeline, seed, symlinks=True)
    dvc(seed, env, "remote", "add", "-d", "storage", str(storage))
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "baseline results, shared remote")
    git(seed, "remote", "add", "origin", str(origin))
    git(seed, "push", "-q", "origin", "main")
    dvc(seed, env, "push")

    machines = [clone(origin, root / "machine-a"), clone(origin, root / "machine-b")]
    # Numbered as the schedulers number them: a SLURM job array, a Kubernetes Indexed Job.
    numbers = [{"SLURM_ARRAY_TASK_ID": "0"}, {"JOB_COMPLETION_INDEX": "1"}]
    # A developer's own task number (tests run in a SLURM job) must not decide these.
    scrubbed = {k: v for k, v in env.items() if k not in sweep.INDEX_VARIABLES}
    tasks = [subprocess.Popen(sweep_task("run", machine), env={**scrubbed, **number},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for machine, number in zip(machines, numbers)]
    done = [task.communicate(timeout=600) for task in tasks]
    for task, (out, err) in zip(tasks, done):
        assert task.returncode == 0, err
    failed = run(sweep_task("run", machines[0], "--index", "2"), machines[0], env, check=False)
    return {"origin": origin, "storage": storage, "root": root, "tasks": done, "failed": failed}


@pytest.mark.slow
def test_each_task_reports_its_experiment_by_name(shared):
    assert [err.strip().splitlines()[-1] for _, err in shared["tasks"]] == [
        "task 0: sweep-0 (lr=0.01): pushed to origin", "task 1: sweep-1 (lr=0.05): pushed to origin"]
    # Nothing in the log says the outputs still need pushing: `dvc push` sent them first.
    assert not any("--no-cache" in out + err for out, err in shared["tasks"])


@pytest.mark.slow
def test_a_third_machine_collects_both_and_sees_them_in_exp_show_and_tensorboard(shared, env):
    laptop = clone(shared["origin"], shared["root"] / "collector")
    done = run(sweep_task("collect", laptop), laptop, env, check=False)
    assert_failed(done, "pulled 2 of 3: sweep-0, sweep-1",
                  "Error: origin lacks the experiments of these tasks (failed, or not finished; "
                  "their logs say which): task 2: sweep-2 (lr=1e30)")
    assert "No experiments to pull" not in done.stdout + done.stderr
    rows = json.loads(dvc(laptop, env, "exp", "show", "--json").stdout)
    shown = {rev["name"]: rev["data"]["params"]["params.yaml"]["data"]["lr"]
             for row in rows for group in (row.get("experiments") or []) for rev in group["revs"]}
    assert shown == {"sweep-0": 0.01, "sweep-1": 0.05}
    out = shared["root"] / "gathered"
    labels, uncached, _ = experiments.gather(laptop, out)
    assert (sorted(labels), uncached) == (["main (baseline)", "sweep-0 (lr=0.01)",
                                           "sweep-1 (lr=0.05)"], [])
    compared = run([sys.executable, str(ROOT / "scripts/compare.py"), "--repo", str(laptop)],
                   laptop, env).stdout.splitlines()
    names = sorted(row[3:].split()[0] for row in compared[1:compared.index("")])
    assert names == ["main", "sweep-0", "sweep-1"]
    page = run([sys.executable, str(ROOT / "scripts/report.py"), "--repo", str(laptop)], laptop,
               env)
    assert page.stderr == ""  # every experiment's plot data is here: none left undrawn
    text = Path(page.stdout.splitlines()[-1]).read_text()
    assert all(f"<figcaption>{label}</figcaption>" in text for label in labels)


@pytest.mark.slow
def test_a_failed_task_is_named_in_one_line_and_leaves_the_others_intact(shared, env):
    failed = shared["failed"]
    assert_failed(failed, "Error: task 2: sweep-2 (lr=1e30) failed: `dvc exp run` failed: "
                          "failed to reproduce 'train'", "; the stage said: training diverged: ")
    assert failed.stderr.strip().splitlines()[-1].startswith("Error: task 2: sweep-2 (lr=1e30)")
    names = run(["git", "ls-remote", str(shared["origin"]), "refs/exps/*"], shared["root"]).stdout
    assert sorted(line.rsplit("/", 1)[1] for line in names.splitlines()) == ["sweep-0", "sweep-1"]


def workspace(repo: Path) -> list[str]:
    """Every path of the checkout but DVC's own state (.dvc/tmp, .dvc/cache) and git's."""
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("*")
                  if p.relative_to(repo).parts[0] not in (".dvc", ".git")) + [
        (repo / ".dvc/config").read_text()]


@pytest.mark.slow
def test_outputs_in_no_cache_are_named_with_what_to_do(shared, env):
    # A machine whose DVC remote holds none of the outputs: pushed elsewhere, or without them.
    laptop = clone(shared["origin"], shared["root"] / "elsewhere")
    (shared["root"] / "empty-remote").mkdir()
    dvc(laptop, env, "remote", "modify", "--local", "storage", "url",
        str(shared["root"] / "empty-remote"))
    done = run(sweep_task("collect", laptop), laptop, env, check=False)
    assert_failed(done, "pulled 0 of 3: none",
                  "task 2: sweep-2 (lr=1e30); the outputs of these tasks' experiments are in no "
                  "cache, local or on the DVC remote (push them from the machine that ran them "
                  "with `dvc exp push origin NAME`, or run the task again): task 0: sweep-0 "
                  "(lr=0.01); task 1: sweep-1 (lr=0.05)")
    assert len(done.stderr.strip().splitlines()[-1].split("Error: ")) == 2  # one line
    # What needs their logs names them and says how to get them.
    gathered = run([sys.executable, str(ROOT / "scripts/tensorboard_exps.py"), "--repo",
                    str(laptop), "--no-serve", "--out", str(shared["root"] / "none")], laptop, env,
                   check=False)
    assert_failed(gathered, "Error: no experiment's TensorBoard logs are in the DVC cache: run "
                            "`dvc pull`")
    assert not (shared["root"] / "none").exists()
    assert sorted(experiments.gather(laptop, shared["root"] / "none-either")[1]) == [
        "main (baseline)", "sweep-0 (lr=0.01)", "sweep-1 (lr=0.05)"]
    page = run([sys.executable, str(ROOT / "scripts/report.py"), "--repo", str(laptop)], laptop,
               env)
    warning, named = page.stderr.rstrip("\n").rsplit(": ", 1)  # named in the table's order
    assert warning == ("Warning: not drawn, outputs not in the DVC cache (`dvc pull`, or `dvc exp "
                       "pull REMOTE NAME` for an experiment)")
    assert sorted(named.split(", ")) == ["main (baseline)", "sweep-0 (lr=0.01)",
                                         "sweep-1 (lr=0.05)"]


@pytest.mark.slow
def test_unknown_experiments_and_an_unknown_git_remote_are_one_line_each(shared, env):
    laptop = clone(shared["origin"], shared["root"] / "typo")
    done = run(sweep_task("collect", laptop, "--prefix", "swep"), laptop, env, check=False)
    assert_failed(done, "pulled 0 of 3: none", "Error: origin lacks the experiments of these tasks "
                  "(failed, or not finished; their logs say which): task 0: swep-0 (lr=0.01); task "
                  "1: swep-1 (lr=0.05); task 2: swep-2 (lr=1e30)\n")
    done = run(sweep_task("collect", laptop, "--git-remote", "nowhere"), laptop, env,
               check=False)
    assert_failed(done, "Error: `dvc exp list` failed: 'nowhere' is not a valid Git remote or URL")
    assert json.loads(dvc(laptop, env, "exp", "show", "--json").stdout)[1].get("experiments") is None


@pytest.mark.parametrize("args, number, message", [
    (("-S", "lr=0.01,0.02"), {"SLURM_ARRAY_TASK_ID": "2"},
     "Error: task 2 is beyond the grid of 2 points (tasks 0 to 1)"),
    (("-S", "lr=0.01", "-S", "seed=0,1"), {"JOB_COMPLETION_INDEX": "x"},
     "Error: JOB_COMPLETION_INDEX is 'x', not a task number"),
    (("-S", "lr=0.01"), {}, "Error: no task number: give --index, or run as a task of a SLURM job "
     "array (SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)"),
    (("-S", "lrr=0.01"), {"JOB_COMPLETION_INDEX": "0"},
     "Error: -S lrr=0.01: unknown key 'lrr'; did you mean 'lr'?"),
    (("-S", "lr=0.01,-1"), {"JOB_COMPLETION_INDEX": "0"},
     "Error: -S lr=0.01,-1: lr must be a number > 0 that float32 holds"),
    (("-S", "lr=0.01,"), {"JOB_COMPLETION_INDEX": "0"}, "Error: -S 'lr=0.01,' is not KEY=V1,V2,..."),
    (("-S", "lr=0.1", "-S", "lr=0.2"), {"JOB_COMPLETION_INDEX": "0"},
     "Error: -S lr is given twice; list all its values in one -S"),
    ((), {"JOB_COMPLETION_INDEX": "0"}, "Error: no grid: give one -S KEY=V1,V2,... per param"),
])
def test_a_task_refuses_a_bad_grid_or_number_before_running_anything(repo, env, args, number,
                                                                     message):
    scrubbed = {k: v for k, v in env.items() if k not in sweep.INDEX_VARIABLES}
    done = run([sys.executable, str(ROOT / "scripts/sweep_task.py"), "run", "--repo", str(repo),
                *args], repo, {**scrubbed, **number}, check=False, timeout=60)
    assert_failed(done, message)
    assert git(repo, "status", "--porcelain", "--ignored") == ""  # nothing ran, nothing written


def test_tasks_are_numbered_through_the_grid_last_key_fastest():
    points = sweep.grid(("lr=0.01,0.1", "seed=0,1,2"), "s")
    assert [str(p) for p in points[:4]] == ["task 0: s-0 (lr=0.01 seed=0)",
                                            "task 1: s-1 (lr=0.01 seed=1)",
                                            "task 2: s-2 (lr=0.01 seed=2)",
                                            "task 3: s-3 (lr=0.1 seed=0)"]
    assert len(points) == 6


@pytest.fixture
def s3(env, tmp_path):
    """An S3-compatible server (moto's) on loopback with one bucket, and the environment that
    points DVC at it: (endpoint URL, env)."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed "
                                        "(requirements-dev.in pins it)")
    boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (dvc-s3 brings it)")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    # start() waits for a server that, if it cannot listen, never comes: wait for it here.
    starting = threading.Thread(target=server.start, daemon=True)
    starting.start()
    starting.join(timeout=60)
    if starting.is_alive():
        pytest.skip("moto's S3 server could not listen on 127.0.0.1 (its thread's error above)")
    port = server.get_host_and_port()[1]
    endpoint = f"http://127.0.0.1:{port}"
    # Credentials of this server only: a developer's ~/.aws must not reach it, nor a real S3.
    s3_env = {**env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
              "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
              "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials")}
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket="fashion")
    yield endpoint, s3_env, client, server
    server.stop()


@pytest.mark.slow
def test_an_s3_remote_gives_back_the_same_bytes_and_an_unreachable_one_fails_in_one_line(
        pipeline, s3, tmp_path):
    endpoint, env, client, server = s3
    laptop = tmp_path / "laptop"
    shutil.copytree(pipeline, laptop, symlinks=True)
    dvc(laptop, env, "remote", "add", "-d", "storage", "s3://fashion/dvc")
    dvc(laptop, env, "remote", "modify", "storage", "endpointurl", endpoint)
    git(laptop, "add", "-A")
    git(laptop, "commit", "-q", "-m", "baseline results, S3 remote")
    dvc(laptop, env, "push")
    stored = client.list_objects_v2(Bucket="fashion", Prefix="dvc/")["KeyCount"]
    assert stored > 10

    machine = clone(laptop, tmp_path / "machine")
    dvc(machine, env, "pull")
    assert snapshot(machine) == snapshot(laptop) != {}

    server.stop()
    unreachable = clone(laptop, tmp_path / "unreachable")
    before = workspace(unreachable)
    done = run(sweep_task("run", unreachable, "--index", "0"), unreachable, env, check=False,
               timeout=300)
    assert_failed(done, "Error: task 0: sweep-0 (lr=0.01) failed: `dvc pull` failed: failed to "
                        f"connect to s3 (fashion/dvc/files/md5) - Could not connect to the endpoint "
                        f'URL: "{endpoint}/fashion/dvc/files/md5"')
    assert workspace(unreachable) == before  # no output, not even a part of one


def slurm_grid(script: str) -> tuple[str, ...]:
    [line] = [line for line in script.splitlines() if line.startswith("GRID=(")]
    return tuple(line.removeprefix("GRID=(").removesuffix(")").split())


def test_the_slurm_script_is_valid_bash_and_its_array_spans_its_grid():
    script = (ROOT / "docs/cluster/sweep.slurm").read_text()
    run(["bash", "-n", str(ROOT / "docs/cluster/sweep.slurm")], ROOT)
    points = sweep.grid(tuple(slurm_grid(script)[1::2]), "sweep")
    assert f"#SBATCH --array=0-{len(points) - 1}\n" in script
    assert 'python scripts/sweep_task.py run --prefix "$PREFIX" "${GRID[@]}"' in script


def test_the_kubernetes_manifest_is_an_indexed_job_of_one_pod_per_grid_point():
    job = YAML(typ="safe").load((ROOT / "docs/cluster/sweep-job.yaml").read_text())
    assert (job["apiVersion"], job["kind"], job["spec"]["completionMode"]) == (
        "batch/v1", "Job", "Indexed")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert "/fashion-mnist-dvc:" in container["image"]
    env = {item["name"]: item["value"] for item in container["env"]}
    points = sweep.grid(tuple(env["GRID"].split()[1::2]), env["PREFIX"])
    assert job["spec"]["completions"] == len(points)
    assert "python scripts/sweep_task.py run --prefix \"$PREFIX\" $GRID" in container["args"][0]
    # The same command line is valid shell.
    run(["bash", "-n", "-c", container["args"][0]], ROOT)
