"""The experiment loop on real DVC experiments: make compare, make baseline, make report."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import ROOT, dvc, git
from tests.faults import assert_failed
from tests.test_reproduction import snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loop(pipeline, env, tmp_path_factory) -> Path:
    """The pipeline repo with its results committed as the baseline (lr=0.02), and experiments:
    `slow` (lr=0.01), `b8` (batch_size=8) and `slow-again`, the same as `slow` (from the
    run-cache). The workspace holds slow-again's results, as `dvc exp run` leaves them."""
    repo = tmp_path_factory.mktemp("loop") / "repo"
    shutil.copytree(pipeline, repo, symlinks=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline results")
    dvc(repo, env, "exp", "run", "-S", "lr=0.01", "--name", "slow")
    dvc(repo, env, "exp", "run", "-S", "lr=0.02", "-S", "batch_size=8", "--name", "b8")
    dvc(repo, env, "exp", "run", "-S", "lr=0.01", "-S", "batch_size=4", "--name", "slow-again")
    return repo


def script(name: str, repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / f"scripts/{name}.py"), "--repo", str(repo),
                           *args], env=env, capture_output=True, text=True, timeout=300)


def shown(repo, env) -> dict:
    rows = json.loads(dvc(repo, env, "exp", "show", "--json").stdout)
    return {rev.get("name") or "main": rev["data"] for row in rows if row["rev"] != "workspace"
            for rev in [row] + [r for g in row.get("experiments") or [] for r in g["revs"]]}


def test_compare_ranks_every_distinct_experiment_in_100_columns(loop, env):
    done = script("compare", loop, env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= 100
    accuracy = {name: data["metrics"]["metrics/evaluate.json"]["data"]["accuracy"]
                for name, data in shown(loop, env).items()}
    rows = lines[1:lines.index("")]
    names = [row[3:].split("  ")[0] for row in rows]
    assert sorted(names) == ["b8", "main (baseline)", "slow"]  # slow-again shown as slow
    ranked = sorted(["b8", "main", "slow"], key=lambda name: -accuracy[name])
    assert [name.split()[0] for name in names] == ranked
    assert rows[0].startswith("*  ") and not any(row.startswith("*") for row in rows[1:])
    slow = next(row for row in rows if row[3:].startswith("slow "))
    assert slow.split()[1:3] == ["lr=0.01", f"{accuracy['slow']:.4f}"]
    assert "Same params and code as slow: slow-again" in done.stdout

    wide = script("compare", loop, env, "--all")
    assert wide.returncode == 0, wide.stderr
    header = wide.stdout.splitlines()[0].split()
    assert {"seed", "lr", "batch_size", "Macro", "Steps", "Device"} <= set(header)


def compared(repo: Path, env: dict) -> tuple[dict[str, str], str]:
    """`make compare`'s rows as name -> Code column, and its notes."""
    done = script("compare", repo, env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = lines[1:lines.index("")]
    return {row[3:].split("  ")[0]: row.split()[-1] for row in rows if row[3:4] != " "}, \
        "\n".join(lines[lines.index(""):])


def test_compare_shows_uncommitted_code_and_results_no_experiment_recorded(loop, env, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(loop, repo, symlinks=True)
    model = repo / "fashion/model.py"
    committed = model.read_text()
    model.write_text(committed + "# an uncommitted edit\n")
    dvc(repo, env, "exp", "run", "-S", "lr=0.01", "--name", "slow-edited")
    code, notes = compared(repo, env)
    # The same params as slow, other code: a row of its own, marked.
    assert code == {"main (baseline)": "commit", "slow": "commit", "b8": "commit",
                    "slow-edited": "edited"}
    assert "the workspace" not in notes  # it holds slow-edited's results

    model.write_text(committed)
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("lr: 0.01\n", "lr: 0.03\n"))
    dvc(repo, env, "repro")
    accuracy = json.loads((repo / "metrics/evaluate.json").read_text())["accuracy"]
    code, notes = compared(repo, env)
    assert set(code) == {"main (baseline)", "slow", "b8", "slow-edited"}
    assert (f"Not shown, the workspace's own results (test accuracy {accuracy:.4f}), of a run "
            "that no experiment recorded (`dvc repro`): `dvc exp save` keeps them as an "
            "experiment, `make baseline` discards them.") in " ".join(notes.split())
    dvc(repo, env, "exp", "save", "--name", "saved")
    code, notes = compared(repo, env)
    assert code["saved"] == "commit" and "the workspace" not in notes


def test_baseline_restores_head_s_results_and_leaves_other_work_alone(loop, pipeline, env,
                                                                      tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(loop, repo, symlinks=True)
    edited = (repo / "fashion/model.py").read_text() + "# an edit of mine\n"
    (repo / "fashion/model.py").write_text(edited)
    (repo / "notes.txt").write_text("mine\n")
    # What DVC 3.67 can leave after a stage that fails at once: params.yaml rewritten in place
    # with the size and time that git's index holds for HEAD's, so that git takes it for
    # unchanged and `git status` does not list it. (Its ctime cannot be set back: git is told
    # not to trust ctimes.)
    params = repo / "params.yaml"
    rewritten = params.read_bytes()
    git(repo, "config", "core.trustctime", "false")
    git(repo, "checkout", "HEAD", "--", "params.yaml")
    os.utime(params, (1e9, 1e9))  # older than the index, so git does not check its content
    git(repo, "add", "params.yaml")
    assert params.stat().st_size == len(rewritten)
    with params.open("r+b") as f:  # the same inode
        f.write(rewritten)
    os.utime(params, (1e9, 1e9))
    assert "params.yaml" not in git(repo, "status", "--porcelain")
    assert snapshot(repo) != snapshot(pipeline)

    done = script("baseline", repo, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        # Evaluate's provenance record is the same for every lr (it reads the device only).
        "Restored from HEAD: dvc.lock, metrics/evaluate.json, metrics/provenance/train.json, "
        "metrics/train.json, params.yaml",
        "Restored from the DVC cache: models/model.pt, plots/confusion.csv, plots/pr/, "
        "plots/train_loss.csv, runs/evaluate/, runs/train/"]
    assert snapshot(repo) == snapshot(pipeline)  # the baseline's outputs, byte for byte
    assert (repo / "params.yaml").read_bytes() == (pipeline / "params.yaml").read_bytes()
    assert (repo / "fashion/model.py").read_text() == edited
    assert (repo / "notes.txt").read_text() == "mine\n"
    assert git(repo, "status", "--porcelain").splitlines() == [" M fashion/model.py",
                                                               "?? notes.txt"]

    again = script("baseline", repo, env)
    assert again.stdout == ("Already at HEAD's params.yaml, dvc.lock, metrics and outputs: "
                            "nothing restored.\n")


def test_baseline_without_the_outputs_in_the_cache_says_what_to_do(loop, env, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(loop, repo, symlinks=True)
    shutil.rmtree(repo / ".dvc/cache")
    done = script("baseline", repo, env)
    # The workspace holds slow-again's outputs, which the cache no longer has: DVC would lose them.
    assert_failed(done, "params.yaml, dvc.lock and metrics are HEAD's again; `dvc checkout` would "
                        "delete outputs that the DVC cache lacks: ", "models/model.pt",
                        "(`dvc commit` keeps them, `dvc checkout --force` discards them)")
    assert git(repo, "status", "--porcelain", "--", "params.yaml", "dvc.lock", "metrics") == ""
    assert (repo / "models/model.pt").exists()

    for output in ("data", "models", "runs", "plots"):  # what a fresh clone has: no outputs
        shutil.rmtree(repo / output)
    done = script("baseline", repo, env)
    assert_failed(done, "params.yaml, dvc.lock and metrics are HEAD's again, but the DVC cache "
                        "lacks some of their outputs (", "`dvc pull` brings them")


def report(repo, env, *args) -> tuple[subprocess.CompletedProcess, Path]:
    done = script("report", repo, env, *args)
    assert done.returncode == 0, done.stderr
    page = Path(done.stdout.splitlines()[-1])  # the last line names the page
    assert page == (Path(args[-1]) if "--out" in args else repo / "reports/experiments.html")
    return done, page


def test_report_is_one_offline_page_with_every_chart(loop, env):
    before = snapshot(loop)
    _, page = report(loop, env)
    text = page.read_text()
    assert snapshot(loop) == before  # read from the cache: nothing checked out
    # Nothing to fetch: no URL of any kind, no script or stylesheet; references only within the
    # page (the charts' clip paths: url(#id), href="#id"; a matrix's pixels: href="data:...").
    assert not re.search(r"https?:|//[a-z0-9]|\bsrc=|<link|<script|url\((?!#)|@import"
                         r"|href=\"(?!#|data:image/png;base64,)", text, re.I)
    charts = re.findall(r"<svg\b.*?</svg>", text, re.S)
    assert len(charts) == 2 + 3  # loss, PR grid, a confusion matrix per distinct experiment
    loss = YAML(typ="safe").load((loop / "dvc.yaml").read_text())["plots"][0]["Training loss"]
    assert loss["x_label"] in charts[0]  # the axis as dvc.yaml's plot names it
    for label in ("main (baseline)", "slow (lr=0.01)", "b8 (batch_size=8)"):
        assert text.count(label) >= 3  # in the legends and above its confusion matrix
    assert "slow-again" in text  # named in the table's notes
    assert all(name in charts[1] for name in ("t-shirt-top", "ankle-boot"))
    assert "Ankle Boot" in charts[2]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_report_renders_in_a_headless_browser(loop, env, tmp_path):
    from PIL import Image

    _, page = report(loop, env, "--out", str(tmp_path / "page.html"))
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,1600", "--virtual-time-budget=15000",
                    page.as_uri()], capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB").reduce(4)
    colours = image.getcolors(maxcolors=1 << 16) or []
    inked = sum(count for count, rgb in colours if min(rgb) < 200)
    assert inked > 0.02 * image.width * image.height  # table, lines and matrices drawn
    assert sum(1 for _, (r, g, b) in colours if max(r, g, b) - min(r, g, b) > 60) > 10  # colour


def test_report_names_experiments_missing_from_the_cache_and_draws_the_rest(loop, env, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(loop, repo, symlinks=True)
    dvc(repo, env, "exp", "run", "--queue", "--name", "waiting", "-S", "lr=0.05")
    # What a fresh clone or `dvc gc` leaves: slow's lock names plot data the cache lacks.
    lock = YAML(typ="safe").load(git(repo, "show", f"{shown(repo, env)['slow']['rev']}:dvc.lock"))
    [md5] = [out["md5"] for out in lock["stages"]["train"]["outs"]
             if out["path"] == "plots/train_loss.csv"]
    (repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).unlink()
    done, page = report(repo, env)
    assert done.stderr.splitlines()[-1].endswith("for an experiment): slow (lr=0.01)")
    text = page.read_text()
    assert "Not drawn, their outputs are not in the local DVC cache: slow (lr=0.01)" in text
    assert "dvc exp pull" in text
    assert len(re.findall(r"<svg\b", text)) == 2 + 2
    assert "queued, running or failed (`dvc queue status`): waiting" in text
    compared = script("compare", repo, env)
    assert compared.stdout.rstrip().endswith("(`dvc queue status`): waiting")
