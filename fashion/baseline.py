"""Back to HEAD's results (`make baseline`): params.yaml, dvc.lock and metrics as committed, and
the pipeline's outputs as that dvc.lock names them. Other uncommitted work is left as it is."""

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fashion.errors import FashionError

# What `dvc exp run` and `dvc exp apply` rewrite in git's part of the workspace.
RESULTS = ("params.yaml", "dvc.lock", "metrics")


@dataclass(frozen=True)
class Restored:
    files: list[str]  # of RESULTS, put back from HEAD
    outputs: list[str]  # pipeline outputs DVC checked out from its cache


def _git(repo: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=repo, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise FashionError(f"`git {args[0]}` failed: "
                           f"{(done.stderr.strip().splitlines() or ['no message'])[-1]}")
    return done.stdout


def differing(repo: Path) -> list[str]:
    """The committed files of RESULTS whose workspace or staged copy is not HEAD's.

    Compared by content: after a stage that fails within a second, DVC 3.67 can leave git's index
    taking a rewritten file for unchanged, so that `git status` does not list it."""
    head = {}
    for entry in _git(repo, "ls-tree", "-r", "-z", "HEAD", "--", *RESULTS).split("\0"):
        if entry:
            meta, path = entry.split("\t", 1)
            head[path] = meta.split()[2]
    present = [path for path in head if (repo / path).is_file()]
    hashes = _git(repo, "hash-object", "--stdin-paths",
                  stdin="".join(f"{path}\n" for path in present)).split() if present else []
    workspace = dict(zip(present, hashes))
    staged = set(_git(repo, "diff", "--cached", "--name-only", "-z", "HEAD", "--",
                      *RESULTS).split("\0"))
    return sorted(path for path, blob in head.items()
                  if workspace.get(path) != blob or path in staged)


def _checkout_outputs(repo: Path) -> list[str]:
    """`dvc checkout`: the outputs dvc.lock names, from the cache. Returns those it changed."""
    # Imported here: DVC takes a second to import.
    from dvc.exceptions import CheckoutError, DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(repo)) as dvc:
            changed = dvc.checkout()
    except CheckoutError as exc:
        raise FashionError("params.yaml, dvc.lock and metrics are HEAD's again, but the DVC "
                           f"cache lacks some of their outputs ({', '.join(exc.target_infos)}): "
                           "`dvc pull` brings them, or `dvc repro` makes them") from None
    except DvcException as exc:  # outputs changed by hand and never cached: DVC would delete them
        lines = str(exc).splitlines()
        unsaved = [os.path.relpath(line, repo) for line in lines[1:] if os.path.isabs(line)]
        raise FashionError("params.yaml, dvc.lock and metrics are HEAD's again; `dvc checkout` "
                           + (f"would delete outputs that the DVC cache lacks: "
                              f"{', '.join(unsaved)} (`dvc commit` keeps them, `dvc checkout "
                              f"--force` discards them)" if unsaved else f"stopped: {lines[0]}")
                           ) from None
    paths = {os.path.relpath(p, repo) + ("/" if p.endswith(os.sep) else "")
             for kind in ("added", "modified", "deleted") for p in changed.get(kind, [])}
    return sorted(paths)


def restore(repo: Path) -> Restored:
    """Put params.yaml, dvc.lock and metrics back to HEAD's, then the outputs dvc.lock names."""
    repo = repo.resolve()
    if subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD^{commit}"], cwd=repo,
                      capture_output=True).returncode != 0:
        raise FashionError(f"{repo} has no git commit to go back to: commit the project first")
    files = differing(repo)
    if files:
        # Out of the index first: an entry that git takes for unchanged, `git checkout` skips.
        _git(repo, "rm", "-q", "-f", "--cached", "--ignore-unmatch", "--", *files)
        _git(repo, "checkout", "HEAD", "--", *files)
    return Restored(files, _checkout_outputs(repo))


def summary(restored: Restored) -> str:
    if not restored.files and not restored.outputs:
        return "Already at HEAD's params.yaml, dvc.lock, metrics and outputs: nothing restored."
    lines = []
    if restored.files:
        lines.append("Restored from HEAD: " + ", ".join(restored.files))
    if restored.outputs:
        lines.append("Restored from the DVC cache: " + ", ".join(restored.outputs))
    return "\n".join(lines)
