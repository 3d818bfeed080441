"""The verdict on a reproduction: the workspace's pipeline outputs against HEAD's baseline.

HEAD's dvc.lock holds the baseline's hash of every output; each workspace output is hashed afresh
with DVC's own hashing (so an output edited after dvc.lock was written is caught), and the metrics
are compared with DVC's metrics diff. The provenance records say which platform each side ran on.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from fashion import provenance
from fashion.errors import FashionError

# The provenance records (fashion/provenance.py): they describe a run and are no result of it.
RECORDS = "metrics/provenance/"
# Shown first, changed or not; the other metrics only where they changed.
HEADLINE = (("metrics/evaluate.json", "accuracy"), ("metrics/evaluate.json", "loss"),
            ("metrics/train.json", "loss"), ("metrics/train.json", "accuracy"))


@dataclass
class Stage:
    """One stage as a dvc.lock records it."""
    deps: dict[str, str]  # path -> hash
    params: dict[str, object]  # name -> value
    outs: dict[str, str]  # path -> hash


@dataclass
class Delta:
    path: str
    key: str
    old: object
    new: object

    @property
    def diff(self) -> float | None:
        numbers = [v for v in (self.old, self.new) if isinstance(v, int | float)
                   and not isinstance(v, bool)]
        return self.new - self.old if len(numbers) == 2 else None

    @property
    def name(self) -> str:
        return f"{Path(self.path).stem} {self.key}"


@dataclass
class Verdict:
    results: list[str]  # the outputs compared, provenance records aside
    differing: list[str]  # results whose bytes differ from the baseline's
    inputs: list[str]  # code, data and params that differ from the baseline's, one line each
    records_differ: bool
    metrics: list[Delta]
    platform: list[tuple[str, str, str]]  # (field, HEAD's, the workspace's)
    tolerance: float | None = None
    largest: Delta | None = field(default=None, init=False)

    def __post_init__(self):
        numeric = [d for d in self.metrics if d.diff is not None]
        self.largest = max(numeric, key=lambda d: abs(d.diff), default=None)

    @property
    def identical(self) -> bool:
        """Every result has the baseline's bits, whatever the inputs and records say."""
        return not self.differing

    @property
    def within_tolerance(self) -> bool:
        """Other bits from the same inputs, with every metric within the tolerance: what another
        CPU family or a GPU gives by design."""
        if self.tolerance is None or self.inputs:
            return False
        if any(d.diff is None and d.old != d.new for d in self.metrics):
            return False  # a metric that appeared, vanished or is no number
        return self.largest is None or abs(self.largest.diff) <= self.tolerance

    @property
    def passed(self) -> bool:
        return self.identical or self.within_tolerance


def _open(root: str | Path | None):
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import NoSCM

    try:
        repo = Repo(root)
    except NotDvcRepoError:
        raise FashionError("not inside a DVC repository: run make verify in the project's "
                           "checkout") from None
    if isinstance(repo.scm, NoSCM):
        raise FashionError(f"{repo.root_dir} is not a git repository: the baseline to verify "
                           "against is HEAD's commit")
    try:
        repo.scm.resolve_rev("HEAD")
    except Exception:  # scmrepo's RevError, and the errors of an empty repository
        raise FashionError("this git repository has no commit yet: commit a baseline (dvc.lock "
                           "and metrics/) first") from None
    return repo


def _stages(repo) -> dict[str, Stage]:
    """Each locked stage of the revision the repo shows now (its index), by name."""
    from dvc.dependency import ParamsDependency

    found = {}
    for stage in repo.index.stages:
        deps, params = {}, {}
        for dep in stage.deps:
            if isinstance(dep, ParamsDependency):
                params.update(dep.hash_info.value or {})
            else:
                deps[dep.def_path] = dep.hash_info.value
        outs = {out.def_path: out.hash_info.value for out in stage.outs if out.hash_info.value}
        found[stage.name] = Stage(deps, params, outs)
    return found


def _head(repo) -> dict[str, Stage]:
    with repo.switch("HEAD"):
        return _stages(repo)


def _show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):  # data checksums: their own hashes are too long for a table
        value = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
    if isinstance(value, str) and len(value) == 64:  # a SHA-256: its start tells two apart
        return value[:12]
    return str(value)


def _inputs(head: dict[str, Stage], work: dict[str, Stage]) -> list[str]:
    lines, code = [], {}
    made = {path for stage in head.values() for path in stage.outs}  # compared as outputs
    for name, base in head.items():
        now = work.get(name)
        if now is None:
            lines.append(f"stage {name}: in HEAD's dvc.lock, not in the workspace's")
            continue
        for key in sorted(base.params.keys() | now.params.keys()):
            if base.params.get(key) != now.params.get(key):
                lines.append(f"param {key}: {_show(base.params.get(key))} -> "
                             f"{_show(now.params.get(key))}")
        for path in sorted(base.deps.keys() | now.deps.keys()):
            if base.deps.get(path) != now.deps.get(path) and path not in made:
                code.setdefault(path, []).append(name)
    lines += [f"{path} (a dependency of {', '.join(names)})" for path, names in code.items()]
    return list(dict.fromkeys(lines))  # params shared by several stages: once


def _stale(repo) -> list[str]:
    """Stages whose code, params, inputs or command changed since their outputs were made."""
    return sorted(name.split(":")[-1] for name, changes in repo.status().items()
                  if any(not (isinstance(c, dict) and set(c) == {"changed outs"}) for c in changes))


def _workspace_hashes(repo, head: dict[str, Stage]) -> dict[str, str]:
    """Each baseline output's hash from its bytes in the workspace now; a missing output, or one
    without a baseline, is an error."""
    outs = {out.def_path: out for out in repo.index.outs}
    never = [path for stage in repo.index.stages for path in (o.def_path for o in stage.outs)
             if not any(path in s.outs for s in head.values())]
    if never:
        raise FashionError(f"HEAD's dvc.lock has no baseline for {', '.join(never)}: run make "
                           "repro and commit dvc.lock and metrics/ to make one")
    gone = [path for stage in head.values() for path in stage.outs
            if path not in outs or not outs[path].exists]
    if gone:
        named = ", ".join(gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else "")
        raise FashionError(f"missing from the workspace: {named}; run make repro (or dvc "
                           "checkout for the committed outputs) first")
    return {path: outs[path].get_hash().value for stage in head.values() for path in stage.outs}


def _records(repo) -> list[str]:
    return [out.def_path for out in repo.index.outs if out.def_path.startswith(RECORDS)]


def _platform(repo, records: list[str]) -> list[tuple[str, str, str]]:
    """The device and every recorded field whose value differs between the two sides, then the
    workspace's host (host records are never committed, so HEAD's is unknown)."""
    head_fs = repo.scm.get_fs("HEAD")
    rows: dict[str, tuple] = {}
    for path in records:
        base = _json(head_fs.read_text, path)
        now = _json(Path.read_text, Path(repo.root_dir) / path)
        for key in ["device", *sorted(base.keys() | now.keys())]:
            if key not in rows and (key == "device" or base.get(key) != now.get(key)):
                rows[key] = (base.get(key), now.get(key))
    host = (provenance.read_host(Path(repo.root_dir) / records[0]) if records else None) or {}
    for key in ("cpu", "python", "threads"):
        rows[f"{key} (host)"] = ("not committed", host.get(key, "not recorded by this run"))
    return [(key, _show(old), _show(new)) for key, (old, new) in rows.items()]


def _json(read, path) -> dict:
    """A JSON object read by read(path); empty where there is none (the other side lacks it)."""
    try:
        found = json.loads(read(path))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _metrics(repo, results: list[str]) -> list[Delta]:
    metric_paths = [out.def_path for out in repo.index.outs
                    if out.metric and out.def_path in results]
    diff = repo.metrics.diff(a_rev="HEAD", targets=metric_paths, all=True).get("diff", {})
    found = {(path, key): Delta(path, key, change.get("old"), change.get("new"))
             for path, changes in diff.items() for key, change in changes.items()}
    shown = [found.pop(k, None) for k in HEADLINE]
    changed = sorted((d for d in found.values() if d.old != d.new), key=lambda d: (d.path, d.key))
    return [d for d in shown if d] + changed


def verdict(root: str | Path | None = None, tolerance: float | None = None) -> Verdict:
    from dvc.exceptions import DvcException

    try:
        with _open(root) as repo:
            return _compare(repo, tolerance)
    except DvcException as exc:  # another DVC process holds the lock, a damaged dvc.lock
        raise FashionError(f"DVC: {exc}") from None


def _compare(repo, tolerance: float | None) -> Verdict:
    head = _head(repo)
    if not any(stage.outs for stage in head.values()):
        raise FashionError("HEAD's commit holds no dvc.lock with outputs: run make repro and "
                           "commit dvc.lock and metrics/ as the baseline first")
    actual = _workspace_hashes(repo, head)
    stale = _stale(repo)
    if stale:
        raise FashionError(f"the workspace's outputs of {', '.join(stale)} are out of date with "
                           "their code, params or inputs (dvc status): run make repro first")
    records = _records(repo)
    results = [path for path in actual if path not in records]
    baseline = {path: h for stage in head.values() for path, h in stage.outs.items()}
    return Verdict(
        results=results,
        differing=[path for path in results if actual[path] != baseline[path]],
        inputs=_inputs(head, _stages(repo)),
        records_differ=any(actual[path] != baseline[path] for path in records),
        metrics=_metrics(repo, results),
        platform=_platform(repo, records),
        tolerance=tolerance,
    )


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
            for row in [header, *rows]]


def _metric_rows(metrics: list[Delta]) -> list[tuple[str, ...]]:
    rows, per_class = [], [d for d in metrics if ".per_class." in f".{d.key}"]
    for d in metrics:
        if d not in per_class:
            rows.append((d.name, _show(d.old), _show(d.new),
                         "-" if d.diff is None else f"{d.diff:+.6g}"))
    numeric = [d for d in per_class if d.diff is not None]
    if numeric:
        top = max(numeric, key=lambda d: abs(d.diff))
        rows.append((f"{len(per_class)} per-class metrics", "", "",
                     f"largest {top.diff:+.6g} ({top.key.removeprefix('per_class.')})"))
    return rows


def report(v: Verdict) -> list[str]:
    """The verdict as lines of text: one line when the bits are the same, tables otherwise."""
    platform = _table(("platform", "HEAD", "workspace"), v.platform)
    if v.identical:
        lines = [f"reproduced bit for bit: {len(v.results)} outputs"]
        if v.inputs:  # an edit that changed no output, such as a comment
            lines += ["from inputs that differ from HEAD's:", *(f"  {line}" for line in v.inputs)]
        if v.records_differ:
            lines += ["the provenance records differ (the same bits from another platform or "
                      "other switches):", *platform]
        return lines
    if v.inputs:
        head = "not a reproduction: the workspace ran other inputs than HEAD's baseline"
    elif v.within_tolerance:
        head = (f"reproduced within tolerance {v.tolerance:g}: {len(v.differing)} of "
                f"{len(v.results)} outputs differ in their bits, every metric within it")
    else:
        head = f"differs from HEAD's baseline: {len(v.differing)} of {len(v.results)} outputs"
        if v.tolerance is not None and v.largest is not None:
            head += (f"; {v.largest.name} moved {v.largest.diff:+.6g}, more than the tolerance "
                     f"{v.tolerance:g}")
    lines = [head]
    if v.inputs:
        lines += ["inputs that differ:", *(f"  {line}" for line in v.inputs)]
    if v.differing:
        lines += ["outputs that differ:", *(f"  {path}" for path in v.differing)]
    lines += ["metrics:", *_table(("metric", "HEAD", "workspace", "delta"),
                                  _metric_rows(v.metrics))]
    return lines + platform
