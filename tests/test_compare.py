"""The compare table's rules, on experiments made up here (tests/test_experiment_loop.py runs it
on real DVC experiments)."""

from fashion import compare
from fashion.experiments import Experiment, Listing
from tests.conftest import make_dry_run

BASE = {"seed": 0, "lr": 0.001, "momentum": 0.9, "batch_size": 4, "epochs": 1}
CODE = {"fashion/model.py": "aaa", "data/fashion-mnist": "ddd.dir"}


def experiment(name, accuracy, loss=0.5, code=CODE, edited=False, baseline=False, time="12:00",
               **changed) -> Experiment:
    return Experiment(
        rev=f"{name:0<40}"[:40], name=name, params={**BASE, **changed}, changed=changed,
        metrics={"metrics/evaluate.json": {"accuracy": accuracy, "loss": loss},
                 "metrics/train.json": {"loss": 0.4, "accuracy": 0.8, "steps": 100},
                 "metrics/provenance/train.json": {"git_code_changed": edited, "device": "cpu"}},
        deps=code, timestamp=f"2026-12-04T{time}:00", baseline=baseline)


def test_rows_are_sorted_by_test_accuracy_with_the_best_marked_and_the_baseline_kept():
    rows = compare.rows([experiment("main", 0.84, baseline=True),
                         experiment("fast", 0.86, lr=0.01),
                         experiment("failed-metrics", None, loss=None, lr=0.1),
                         experiment("tie", 0.84, loss=0.4, batch_size=8)])
    assert [r.experiment.name for r in rows] == ["fast", "tie", "main", "failed-metrics"]
    assert [r.best for r in rows] == [True, False, False, False]
    table = compare.text_table(rows).splitlines()
    assert table[1].startswith("*  fast ")
    assert table[3].startswith("   main (baseline) ")
    assert table[4].split()[:4] == ["failed-metrics", "lr=0.1", "-", "-"]  # no test metrics


def test_the_same_params_and_code_are_shown_once_and_named():
    rows = compare.rows([experiment("again", 0.85, time="12:05", lr=0.01),
                         experiment("first", 0.85, time="12:01", lr=0.01),
                         experiment("main", 0.84, baseline=True),
                         experiment("rerun-of-baseline", 0.84, time="12:09"),
                         experiment("edited", 0.85, code={**CODE, "fashion/model.py": "bbb"},
                                    edited=True, time="12:07", lr=0.01)])
    assert [(r.experiment.name, r.same) for r in rows] == [
        ("first", ("again",)), ("edited", ()), ("main", ("rerun-of-baseline",))]
    notes = compare.notes(rows, Listing([], ["queued-one"]))
    assert "Same params and code as first: again" in notes
    assert "Same params and code as main: rerun-of-baseline" in notes
    assert notes[-1].endswith("(`dvc queue status`): queued-one")
    cells = compare.columns(rows)[1]
    assert [row[-1] for row in cells] == ["commit", "edited", "commit"]


def test_the_narrow_table_fits_100_columns_and_wraps_the_changed_params():
    many = {f"param_{i}": 10 ** i for i in range(8)}
    listing = Listing([experiment("main", 0.84, baseline=True),
                       experiment("a-rather-long-experiment-name-indeed", 0.8, **many)], [])
    text = compare.report(listing)
    assert max(len(line) for line in text.splitlines()) <= 100
    shown = " ".join(text.split())
    assert all(f"{k}={v}" in shown for k, v in many.items())  # wrapped, none cut
    assert "a-rather-long-exper…" in text
    wide = compare.report(listing, wide=True)
    assert max(len(line) for line in wide.splitlines()) > 100
    header = wide.splitlines()[0].split()
    assert header[:3] == ["Experiment", "seed", "lr"] and "param_7" in header
    assert "a-rather-long-experiment-name-indeed" in wide


def test_make_compare_all_is_the_wide_view():
    assert make_dry_run("compare")[-1].rstrip() == "python scripts/compare.py"
    assert make_dry_run("compare", "ALL=1")[-1] == "python scripts/compare.py --all"


def test_results_in_the_workspace_that_no_row_shows_are_named():
    main, slow = experiment("main", 0.84, baseline=True), experiment("slow", 0.8, lr=0.01)
    repro = experiment("workspace", 0.86, lr=0.002)  # a `dvc repro` after editing params.yaml

    def said(workspace):
        listing = Listing([main, slow], [], workspace)
        return compare.notes(compare.rows(listing.finished), listing)[-1]

    assert said(repro) == ("Not shown, the workspace's own results (test accuracy 0.8600), of a "
                           "run that no experiment recorded (`dvc repro`): `dvc exp save` keeps "
                           "them as an experiment, `make baseline` discards them.")
    # What `dvc exp run`, `dvc exp apply` and `make baseline` leave: an experiment's results.
    for workspace in (slow, main, None):
        assert not said(workspace).startswith("Not shown, the workspace")
    edited = experiment("workspace", 0.8, code={**CODE, "fashion/model.py": "bbb"}, lr=0.01)
    assert said(edited).startswith("Not shown, the workspace")  # same numbers, other code
