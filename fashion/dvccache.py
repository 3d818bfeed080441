"""A stage's input checked against the hash DVC recorded for it in dvc.lock, and a damaged DVC
cache copy told apart from a file that merely changed.

DVC restores an output from its cache without checking the copy: a cache file damaged on disk
comes back damaged with every `dvc checkout`, and `dvc status` still says up to date, because DVC
trusts the hash it remembers for the cache file. Rerunning the stage does not repair it either:
DVC sees an object of that hash in the cache and keeps it. The one way out is to delete the
damaged cache file, then rebuild it or pull it.
"""

import hashlib
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML, YAMLError

from fashion.errors import FashionError


@dataclass(frozen=True)
class Recorded:
    root: Path       # the DVC repository
    out: str         # the output, relative to root, as dvc.lock names it
    stage: str       # the stage that writes it
    md5: str         # DVC's hash of the output: of the file, or of a directory's listing (.dir)


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _repository(path: Path) -> Path | None:
    for folder in path.parents:
        if (folder / ".dvc").is_dir():
            return folder
    return None


def recorded(path: str | Path) -> tuple[Recorded, str] | None:
    """The dvc.lock entry of the output that is `path` or holds it, and `path` relative to that
    output ('' for the output itself); None outside a DVC repository or for a path it does not
    record."""
    absolute = Path(os.path.abspath(path))
    root = _repository(absolute)
    if root is None or not (root / "dvc.lock").is_file():
        return None
    try:
        lock = YAML(typ="safe", pure=True).load((root / "dvc.lock").read_text())
        stages = lock["stages"].items()
    except (OSError, YAMLError, KeyError, TypeError, AttributeError):
        return None  # DVC reports a broken dvc.lock itself, in its own words
    relative = absolute.relative_to(root).as_posix()
    for stage, entry in stages:
        for out in (entry or {}).get("outs") or []:
            name, digest = out.get("path"), out.get("md5")
            if not isinstance(name, str) or not isinstance(digest, str):
                continue
            if relative == name or relative.startswith(name.rstrip("/") + "/"):
                return Recorded(root, name, stage, digest), relative[len(name):].lstrip("/")
    return None


def damaged_copy(path: str | Path, content: bytes) -> str | None:
    """If `content`, read from `path`, differs from what dvc.lock records for it because the DVC
    cache copy of it is damaged, the message that says so and how to recover; otherwise None (no
    DVC record, the same content, or a file changed by hand or by a run outside DVC)."""
    found = recorded(path)
    if found is None:
        return None
    record, inside = found
    if not inside:
        expected = record.md5
    elif record.md5.endswith(".dir"):
        expected = _listed_md5(record, inside)
    else:
        return None
    if expected is None or md5(content) == expected:
        return None
    cache = _cache_file(record.root, expected)
    try:
        damaged = cache.is_file() and md5(cache.read_bytes()) != expected
    except OSError:
        return None
    if not damaged:
        return None
    shown = shlex.quote(os.path.relpath(cache))
    # The workspace copy goes too: DVC remembers its hash as the one recorded, so a `dvc pull`
    # would fetch an intact cache copy and leave the damaged file in place as up to date.
    return (f"{path} comes from a damaged DVC cache copy ({shown} no longer has the hash "
            f"dvc.lock records, so `dvc checkout` brings the damage back): delete both with "
            f"`rm -f {shown} {shlex.quote(str(path))}`, then rebuild it with `dvc repro --force "
            f"--single-item {record.stage}` or fetch an intact copy with `dvc pull {record.out}`")


def refuse_a_damaged_copy(path: Path) -> None:
    """Raise damaged_copy's message for the file `path`, if it has one. A file that cannot be
    read is left to its reader, which says why in its own words."""
    try:
        content = Path(path).read_bytes()
    except OSError:
        return
    damaged = damaged_copy(path, content)
    if damaged:
        raise FashionError(damaged)


def _cache_file(root: Path, digest: str) -> Path:
    """Where DVC's local cache holds the object `digest`: DVC's own answer, for a cache moved
    elsewhere by its config. Imported here: DVC takes a second to import, and only this needs it."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return Path(repo.cache.local.oid_to_path(digest))


def _listed_md5(record: Recorded, inside: str) -> str | None:
    """The md5 of the file `inside` a directory output, from the directory's listing in the
    cache: a JSON list of {"md5", "relpath"}."""
    try:
        listing = json.loads(_cache_file(record.root, record.md5).read_bytes())
        return next((item["md5"] for item in listing if item.get("relpath") == inside), None)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
