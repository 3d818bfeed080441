"""Show every DVC experiment's TensorBoard logs together (`make tensorboard-exps`)."""

import contextlib
import subprocess
import sys
import tempfile
from pathlib import Path

# Import fashion/ from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click

from fashion import cli, experiments, fileio
from fashion.errors import FashionError


@click.command()
@click.option("--repo", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="The DVC repository.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the gathered logdir here. [default: a temporary directory, removed on exit]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address TensorBoard binds.")
@click.option("--port", default=6006, show_default=True, type=int)
@click.option("--no-serve", is_flag=True, help="Only gather the logs into --out.")
@click.argument("tensorboard_args", nargs=-1, type=click.UNPROCESSED)
@cli.stage_command(ends_with_outputs=False)  # Ctrl-C after gathering stops the server
def main(repo, out, host, port, no_serve, tensorboard_args):
    """Copy runs/ of the baseline commit and of every finished experiment that `dvc exp show` lists
    from the DVC cache into one logdir, a TensorBoard run per experiment named by its name and the
    params it changed, then serve it. The workspace is not touched. Arguments after `--` go to
    TensorBoard."""
    if no_serve and out is None:
        raise click.UsageError("--no-serve needs --out")
    if no_serve and tensorboard_args:
        raise click.UsageError("arguments for TensorBoard make no sense with --no-serve")
    if out is not None and out.exists() and any(out.iterdir()):
        # Runs gathered before, of experiments removed since, would show up as if they still were.
        raise FashionError(f"--out {out} is not empty; name a new directory or empty it first")
    with tempfile.TemporaryDirectory(prefix="fashion-exps-") as tmp:
        logdir = out or Path(tmp)
        # --out appears only once complete: an interrupted or failed gathering leaves nothing.
        with fileio.staged_dir(out) if out else contextlib.nullcontext(logdir) as staging:
            labels, uncached, failed = experiments.gather(repo.resolve(), staging)
            if not labels and failed:
                raise FashionError("no experiment's logs could be copied: " + "; ".join(failed))
            if not labels and uncached:
                raise FashionError("no experiment's TensorBoard logs are in the DVC cache: run "
                                   "`dvc pull` (a fresh clone), or `dvc repro`")
            if not labels:
                raise FashionError("no experiment has TensorBoard logs yet: run `dvc exp run` "
                                   "first")
        for reason in failed:
            click.echo(f"Warning: left out, its logs could not be copied: {reason}", err=True)
        if uncached:
            click.echo("Warning: logs not in the DVC cache, left out (`dvc pull`, or `dvc exp pull "
                       "REMOTE NAME` for an experiment, brings them): " + ", ".join(uncached),
                       err=True)
        click.echo("runs: " + ", ".join(labels), err=True)
        if not no_serve:
            try:
                served = subprocess.run([Path(sys.executable).parent / "tensorboard", "--logdir",
                                         logdir, "--host", host, "--port", str(port),
                                         *tensorboard_args])
            except (KeyboardInterrupt, cli.Terminated):
                return  # Ctrl-C or SIGTERM is how a server is stopped: no error, no message
            if served.returncode < 0:
                raise FashionError(f"TensorBoard was stopped by signal {-served.returncode}")
            if served.returncode != 0:  # a port in use, a bad flag: TensorBoard said why above
                raise FashionError(f"TensorBoard stopped with exit status {served.returncode}, "
                                   "for the reason above")


if __name__ == "__main__":
    main()
