"""One self-contained HTML page of the experiments (`make report`): the compare table, the
training-loss curves overlaid, per-class precision-recall curves and confusion matrices.

Each experiment's plot data is read from the DVC cache at its revision (experiments.files_at),
with the columns that the plots of dvc.yaml at that revision name. The charts are inline SVG drawn
by matplotlib, so the page loads nothing: it reads the same offline.
"""

import csv
import html
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML

from fashion import compare, experiments
from fashion.data import CLASSES
from fashion.errors import FashionError

OUT = Path("reports/experiments.html")  # gitignored
# The plots of dvc.yaml the page draws, by title.
LOSS, PR, CONFUSION = "Training loss", "Precision-recall per class", "Confusion matrix"


@dataclass
class Plots:
    """One experiment's plot data."""
    loss: tuple[list[float], list[float]]  # x (the column dvc.yaml's plot names), loss
    loss_axes: tuple[str, str]  # the plot's x and y labels
    pr: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)  # recall, prec.
    confusion: Counter = field(default_factory=Counter)  # (actual, predicted) -> count


def _definitions(fs) -> dict[str, dict]:
    with fs.open("dvc.yaml") as f:
        plots = YAML(typ="safe").load(f).get("plots") or []
    found = {title: spec for entry in plots for title, spec in entry.items()}
    missing = [title for title in (LOSS, PR, CONFUSION) if title not in found]
    if missing:
        raise FashionError(f"dvc.yaml declares no plot named {', '.join(missing)}")
    return found


def _column(y) -> str:
    return y[0] if isinstance(y, list) else y  # dvc.yaml allows `file: [column]`


def _rows(fs, path: str) -> list[dict]:
    with fs.open(path) as f:
        return list(csv.DictReader(io.StringIO(f.read().decode())))


def read(repo: Path, rev: str) -> Plots:
    """The plot data at `rev`, from the DVC cache; raises experiments.NotCached."""
    with experiments.files_at(repo, rev) as fs:
        specs = _definitions(fs)
        loss = specs[LOSS]
        [(path, column)] = loss["y"].items()
        rows = _rows(fs, path)
        column = _column(column)
        plots = Plots(([float(r[loss["x"]]) for r in rows], [float(r[column]) for r in rows]),
                      (loss.get("x_label", loss["x"]), loss.get("y_label", column)))
        pr = specs[PR]
        for path, column in pr["y"].items():
            rows, column = _rows(fs, path), _column(column)
            plots.pr[Path(path).stem] = ([float(r[pr["x"]]) for r in rows],
                                         [float(r[column]) for r in rows])
        confusion = specs[CONFUSION]
        [(path, column)] = confusion["y"].items()
        plots.confusion.update((r[confusion["x"]], r[_column(column)]) for r in _rows(fs, path))
    return plots


def _svg(figure) -> str:
    """The figure as an <svg> element for inline HTML: no XML prologue, no metadata, no namespace
    URLs (an HTML parser puts <svg> in its namespace by itself)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)


def _figure(width: float, height: float):
    import matplotlib
    from matplotlib.figure import Figure

    # Fixed ids and text as text: the same data gives the same page, and a smaller one.
    matplotlib.rcParams.update({"svg.hashsalt": "fashion-report", "svg.fonttype": "none"})
    return Figure(figsize=(width, height), layout="constrained")


def _colour(index: int) -> str:
    import matplotlib

    return matplotlib.colormaps["tab10"](index % 10)


def loss_chart(drawn: list[tuple[str, Plots]]) -> str:
    figure = _figure(9, 4)
    axes = figure.subplots()
    for index, (label, plots) in enumerate(drawn):
        axes.plot(*plots.loss, label=label, color=_colour(index), linewidth=1.2)
    # Experiments of an older dvc.yaml may count the x-axis in another unit: the label says so.
    for index, setter in enumerate((axes.set_xlabel, axes.set_ylabel)):
        setter(" or ".join(dict.fromkeys(plots.loss_axes[index] for _, plots in drawn)))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _svg(figure)


def pr_chart(drawn: list[tuple[str, Plots]]) -> str:
    classes = list(drawn[0][1].pr)
    figure = _figure(12, 5.5)
    grid = figure.subplots(2, (len(classes) + 1) // 2, sharex=True, sharey=True, squeeze=False)
    for axes, name in zip(grid.flat, classes):
        for index, (label, plots) in enumerate(drawn):
            if name in plots.pr:
                axes.plot(*plots.pr[name], label=label, color=_colour(index), linewidth=1)
        axes.set_title(name, fontsize=9)
        axes.set_xlim(0, 1.02)
        axes.set_ylim(0, 1.02)
        axes.grid(alpha=0.3)
    for axes in grid[-1]:
        axes.set_xlabel("recall")
    for axes in grid[:, 0]:
        axes.set_ylabel("precision")
    grid.flat[0].legend(fontsize=7, loc="lower left")
    return _svg(figure)


def confusion_chart(plots: Plots) -> str:
    names = [c for c in CLASSES if any(c in pair for pair in plots.confusion)]
    names += sorted({c for pair in plots.confusion for c in pair} - set(names))
    counts = [[plots.confusion[(actual, predicted)] for predicted in names] for actual in names]
    figure = _figure(4.6, 4.2)
    axes = figure.subplots()
    axes.imshow(counts, cmap="Blues")
    top = max(max(row) for row in counts) or 1
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            if count:
                axes.text(j, i, str(count), ha="center", va="center", fontsize=6,
                          color="white" if count > top / 2 else "black")
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    return _svg(figure)


STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best { background: #eef7ee; font-weight: bold; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
figcaption { font-size: 0.9em; text-align: center; }
.note { color: #8a4b00; }
svg { max-width: 100%; height: auto; }
"""


def _table(table: list[compare.Row]) -> str:
    headers, cells = compare.columns(table)
    numeric = {i for i, h in enumerate(headers) if h.startswith(("Test", "Train"))}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        f'<tr{" class=best" if row.best else ""}>'
        + "".join(f'<td{" class=num" if i in numeric else ""}>{html.escape(v)}</td>'
                  for i, v in enumerate(values)) + "</tr>\n"
        for row, values in zip(table, cells))
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def page(repo: Path, listing: experiments.Listing) -> tuple[str, list[str]]:
    """The HTML page, and the labels of experiments whose plot data the cache lacks."""
    table = compare.rows(listing.finished)
    drawn, uncached = [], []
    for row in table:
        try:
            drawn.append((row.experiment.label, read(repo, row.experiment.rev)))
        except experiments.NotCached:
            uncached.append(row.experiment)
    notes = [html.escape(note) for note in compare.notes(table, listing)]
    if uncached:
        notes.append('<span class="note">Not drawn, their outputs are not in the local DVC '
                     "cache: " + html.escape(", ".join(e.label for e in uncached))
                     + ". <code>dvc pull</code> brings the baseline's, <code>dvc exp pull "
                     "REMOTE NAME</code> an experiment's.</span>")
    parts = ["<h1>Experiments</h1>", _table(table),
             "".join(f"<p>{note}</p>\n" for note in notes)]
    if drawn:
        parts += [f"<h2>{LOSS}</h2>", loss_chart(drawn),
                  f"<h2>{PR}</h2>", pr_chart(drawn), "<h2>Confusion matrices</h2>",
                  '<div class="grid">' + "".join(
                      f"<figure><figcaption>{html.escape(label)}</figcaption>"
                      f"{confusion_chart(plots)}</figure>" for label, plots in drawn) + "</div>"]
    document = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>Experiments</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
                + "\n".join(parts) + "\n</body>\n</html>\n")
    return document, [e.label for e in uncached]
