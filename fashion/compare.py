"""The experiments side by side (`make compare`): one row per distinct experiment, best first.

Built on experiments.load, that is on `dvc exp show --json`. The narrow view fits WIDTH columns:
name, the params changed from the baseline, test and training metrics, when DVC recorded the
experiment and whether its code was edited; the wide view has every param and more metrics.
"""

import json
import textwrap
from dataclasses import dataclass

from fashion.experiments import Experiment, Listing, changes

WIDTH = 100
EVALUATE = "metrics/evaluate.json"
TRAIN = "metrics/train.json"
PROVENANCE = "metrics/provenance/train.json"


@dataclass(frozen=True)
class Row:
    experiment: Experiment
    same: tuple[str, ...]  # experiments with the same params and code, shown as this one
    best: bool


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _code(e: Experiment, base: Experiment | None) -> str:
    # The stages' code dependencies as DVC recorded them, against the baseline commit's: a record
    # committed with the results cannot say which commit they came from (docs/reproduction.md).
    from fashion.provenance import CODE  # here: that module loads torch, which compare needs not

    if base is None:
        return "?"
    code = [{p: h for p, h in x.deps.items() if p.startswith(CODE)} for x in (e, base)]
    return "edited" if code[0] != code[1] else "commit"


def _name(e: Experiment) -> str:
    return f"{e.name} (baseline)" if e.baseline else e.name


def _order(e: Experiment):
    accuracy, loss = e.metric(EVALUATE, "accuracy"), e.metric(EVALUATE, "loss")
    return (accuracy is None, -(accuracy or 0), loss is None, loss or 0, not e.baseline,
            e.timestamp or "", e.name)


def rows(experiments: list[Experiment]) -> list[Row]:
    """Experiments sorted by test accuracy (then test loss), best first and marked; those with
    the same params and dependencies (code, data) as an earlier one folded into it, the
    baseline first among them, then the earliest."""
    kept: dict[str, list[Experiment]] = {}
    for e in sorted(experiments, key=lambda e: (not e.baseline, e.timestamp or "", e.name)):
        key = json.dumps([e.params, e.deps], sort_keys=True)
        kept.setdefault(key, []).append(e)
    ordered = sorted(kept.values(), key=lambda group: _order(group[0]))
    best = ordered[0][0].metric(EVALUATE, "accuracy") if ordered else None
    return [Row(group[0], tuple(e.name for e in group[1:]),
                best is not None and group[0].metric(EVALUATE, "accuracy") == best)
            for group in ordered]


def columns(rows: list[Row], wide: bool = False) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the table: the narrow view, or with `wide` every param and more."""
    def finished(e: Experiment) -> str:
        if not e.timestamp:
            return "-"
        return e.timestamp if wide else e.timestamp[5:16].replace("T", " ")  # MM-DD HH:MM

    fields = [("", lambda e: "*" if e is best else ""), ("Experiment", _name)]
    best = next((r.experiment for r in rows if r.best), None)
    if wide:
        keys = list(dict.fromkeys(k for r in rows for k in r.experiment.params))
        fields += [(k, lambda e, k=k: str(e.params.get(k, "-"))) for k in keys]
    else:
        fields.append(("Changed params", lambda e: changes(e.changed)))
    fields += [("Test acc", lambda e: _number(e.metric(EVALUATE, "accuracy"))),
               ("Test loss", lambda e: _number(e.metric(EVALUATE, "loss")))]
    if wide:
        fields.append(("Macro AP", lambda e: _number(
            (e.metric(EVALUATE, "macro") or {}).get("average_precision"))))
    fields.append(("Train loss", lambda e: _number(e.metric(TRAIN, "loss"))))
    if wide:
        fields += [("Train acc", lambda e: _number(e.metric(TRAIN, "accuracy"))),
                   ("Steps", lambda e: str(e.metric(TRAIN, "steps") or "-"))]
    base = next((r.experiment for r in rows if r.experiment.baseline), None)
    fields += [("Finished", finished), ("Code", lambda e: _code(e, base))]
    if wide:
        fields += [("Device", lambda e: str(e.metric(PROVENANCE, "device") or "-")),
                   ("Rev", lambda e: e.rev[:7])]
    return ([header for header, _ in fields],
            [[cell(r.experiment) for _, cell in fields] for r in rows])


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def text_table(rows: list[Row], wide: bool = False, width: int = WIDTH) -> str:
    """The table as text: numbers right-aligned; in the narrow view names are clipped to 20
    characters and the changed params wrap within what is left of `width`."""
    headers, cells = columns(rows, wide)
    if not wide:
        cells = [[row[0], _clip(row[1], 20), *row[2:]] for row in cells]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    wrapped = None
    if not wide and "Changed params" in headers:
        wrapped = headers.index("Changed params")
        others = sum(w for i, w in enumerate(widths) if i != wrapped) + 2 * (len(widths) - 1)
        widths[wrapped] = max(len(headers[wrapped]), min(widths[wrapped], width - others))
    numeric = {h for h in headers if h.startswith(("Test", "Train", "Macro", "Steps"))}

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if h in numeric else v.ljust(w)
                         for h, v, w in zip(headers, values, widths)).rstrip()

    out = [line(headers)]
    for row in cells:
        parts = [row]
        if wrapped is not None:
            pieces = textwrap.wrap(row[wrapped], widths[wrapped], break_on_hyphens=False) or [""]
            parts = [[*row[:wrapped], pieces[0], *row[wrapped + 1:]]]
            parts += [["" if i != wrapped else piece for i in range(len(row))]
                      for piece in pieces[1:]]
        out += [line(part) for part in parts]
    return "\n".join(out)


def _results(e: Experiment) -> str:
    return json.dumps([e.deps, e.metrics.get(EVALUATE), e.metrics.get(TRAIN)], sort_keys=True)


def unlisted(listing: Listing) -> bool:
    """Whether the workspace holds results that no row shows: those of a `dvc repro` that no
    experiment recorded. (`dvc exp run` and `dvc exp apply` leave an experiment's there.)"""
    workspace = listing.workspace
    return (workspace is not None and workspace.metric(EVALUATE, "accuracy") is not None
            and _results(workspace) not in {_results(e) for e in listing.finished})


def notes(rows: list[Row], listing: Listing) -> list[str]:
    """What the table's marks mean, and what it leaves out."""
    said = ["* best test accuracy. Finished: when the experiment was committed (HEAD, for the "
            "baseline), not how long it trained: no metric records training time. Code: edited "
            "where the code differed from the baseline commit's."]
    said += [f"Same params and code as {r.experiment.name}: {', '.join(r.same)}"
             for r in rows if r.same]
    if listing.unfinished:
        said.append("Not shown, queued, running or failed (`dvc queue status`): "
                    + ", ".join(listing.unfinished))
    if unlisted(listing):
        said.append("Not shown, the workspace's own results (test accuracy "
                    f"{_number(listing.workspace.metric(EVALUATE, 'accuracy'))}), of a run that "
                    "no experiment recorded (`dvc repro`): `dvc exp save` keeps them as an "
                    "experiment, `make baseline` discards them.")
    return said


def report(listing: Listing, wide: bool = False) -> str:
    table = rows(listing.finished)
    said = [textwrap.fill(note, WIDTH, break_on_hyphens=False, subsequent_indent="  ")
            for note in notes(table, listing)]
    return "\n".join([text_table(table, wide), "", *said])
