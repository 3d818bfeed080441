"""One task of a sweep across machines, and the collection of its results (docs/scale-out.md)."""

import sys
from pathlib import Path

# Import fashion/ from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click

from fashion import cli, sweep
from fashion.errors import FashionError


def grid_options(func):
    func = click.option("-S", "--set-param", "specs", multiple=True, metavar="KEY=V1,V2,...",
                        help="A param and its values, as `dvc exp run -S` takes a sweep; repeat "
                             "it for each param. The grid is every combination.")(func)
    func = click.option("--prefix", default="sweep", show_default=True,
                        help="Experiment names: PREFIX-0, PREFIX-1, ... in task order.")(func)
    func = click.option("--repo", default=".", show_default=True,
                        type=click.Path(exists=True, file_okay=False, path_type=Path),
                        help="The clone of the project to run in.")(func)
    return click.option("--git-remote", default="origin", show_default=True,
                        help="The git remote the experiments go to (their outputs go to the "
                             "DVC remote).")(func)


@click.group()
def main():
    """Run a grid of params as DVC experiments, one task per grid point, on any machines that
    share the project's git remote and DVC remote."""


@main.command("list")
@grid_options
@cli.stage_command
def list_points(specs, prefix, repo, git_remote):
    """Print each task's number, experiment name and params (the array size is their count)."""
    for point in sweep.grid(specs, prefix):
        click.echo(point)


@main.command()
@grid_options
@click.option("--index", type=click.IntRange(min=0),
              help="This task's number. [default: $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX]")
@cli.stage_command
def run(specs, prefix, repo, git_remote, index):
    """Run this task's grid point: `dvc pull`, `dvc exp run -S ...`, `dvc exp push`."""
    points = sweep.grid(specs, prefix)
    index = sweep.task_index(index)
    if index >= len(points):
        raise FashionError(f"task {index} is beyond the grid of {len(points)} points "
                           f"(tasks 0 to {len(points) - 1})")
    point = points[index]
    click.echo(f"{point}: running", err=True)
    sweep.run_task(repo, point, git_remote)
    click.echo(f"{point}: pushed to {git_remote}", err=True)


@main.command()
@grid_options
@cli.stage_command
def collect(specs, prefix, repo, git_remote):
    """Pull every task's experiment with its outputs. Name the tasks whose experiment the git
    remote lacks (failed, or not finished) or whose outputs are in no cache, and exit 1 if any."""
    points = sweep.grid(specs, prefix)
    result = sweep.collect(repo, points, git_remote)
    click.echo(f"pulled {len(result['pulled'])} of {len(points)}: "
               + (", ".join(p.name for p in result["pulled"]) or "none"), err=True)
    problems = []
    if result["missing"]:
        problems.append(f"{git_remote} lacks the experiments of these tasks (failed, or not "
                        "finished; their logs say which): "
                        + "; ".join(str(p) for p in result["missing"]))
    if result["uncached"]:
        problems.append("the outputs of these tasks' experiments are in no cache, local or on the "
                        "DVC remote (push them from the machine that ran them with `dvc exp push "
                        f"{git_remote} NAME`, or run the task again): "
                        + "; ".join(str(p) for p in result["uncached"]))
    if problems:
        raise FashionError("; ".join(problems))


if __name__ == "__main__":
    main()
