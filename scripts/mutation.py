"""make mutation: mutmut over the core modules against the fast tests ([tool.mutmut] in
pyproject.toml), then the score and every surviving mutant.

mutmut lives in .venv-mutation, a venv that also sees .venv's packages through a .pth file, so
that neither the pins of requirements.txt nor `make test` change.
"""

import hashlib
import re
import signal
import subprocess
import sys
import sysconfig
from collections import Counter
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements-mutation.txt"
# mutmut's words for a mutant that a test caught: failed, or ran out of time.
CAUGHT = ("killed", "timeout")


def ensure_venv(venv: Path) -> Path:
    """venv's python, the venv created and requirements-mutation.txt installed when needed."""
    python = venv / "bin/python"
    stamp = venv / f".installed-{hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]}"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not stamp.exists():
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              check=True, capture_output=True, text=True).stdout.strip()
        # This interpreter's packages (.venv's), after the venv's own.
        (Path(site) / "_fashion_venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
                       check=True)
        for old in venv.glob(".installed-*"):
            old.unlink()
        stamp.touch()
    return python


def tally(results: str) -> tuple[Counter, list[str]]:
    """(count per status, names of the mutants that survived) from `mutmut results --all true`."""
    statuses, survivors = Counter(), []
    for name, status in re.findall(r"^\s*(\S+): (.+?)\s*$", results, re.MULTILINE):
        statuses[status] += 1
        if status == "survived":
            survivors.append(name)
    return statuses, survivors


@click.command()
@click.option("--venv", type=click.Path(path_type=Path), default=ROOT / ".venv-mutation",
              show_default=True, help="Where mutmut is installed.")
@click.option("--max-children", type=int, default=2, show_default=True,
              help="Mutants tested at once.")
@click.option("--show/--no-show", default=False, help="Print the diff of each surviving mutant.")
@click.argument("mutants", nargs=-1)
def main(venv: Path, max_children: int, show: bool, mutants: tuple[str, ...]) -> None:
    """Run mutmut (MUTANTS: names or globs such as 'fashion.data*'; default all) and print the
    score and the survivors. Results are kept in mutants/: a second run tests only what changed."""
    # Started in the background of a shell, this process ignores SIGINT, and mutmut's tests would
    # inherit that; a handler of its own here is reset to the default in them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    python = ensure_venv(venv)
    mutmut = [str(python), "-m", "mutmut"]
    done = subprocess.run([*mutmut, "run", "--max-children", str(max_children), *mutants], cwd=ROOT)
    if done.returncode != 0:
        raise click.ClickException(f"mutmut run exited {done.returncode} (its output is above)")
    results = subprocess.run([*mutmut, "results", "--all", "true"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    statuses, survivors = tally(results)
    for name in survivors:
        click.echo(f"survived: {name}")
        if show:
            click.echo(subprocess.run([*mutmut, "show", name], cwd=ROOT, capture_output=True,
                                      text=True).stdout)
    tested = sum(n for status, n in statuses.items() if status not in ("no tests", "not checked"))
    caught = sum(statuses[status] for status in CAUGHT)
    click.echo(", ".join(f"{n} {status}" for status, n in sorted(statuses.items())))
    if tested:
        click.echo(f"mutation score: {caught}/{tested} = {100 * caught / tested:.1f}% of the "
                   f"mutants that some fast test reaches; {statuses['no tests']} reached by none")


if __name__ == "__main__":
    main()
