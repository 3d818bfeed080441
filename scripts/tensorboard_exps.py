"""Show every DVC experiment's TensorBoard logs together (`make tensorboard-exps`)."""

import subprocess
import sys
import tempfile
from pathlib import Path

# Import fashion/ from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click

from fashion import cli, experiments
from fashion.errors import FashionError


@click.command()
@click.option("--repo", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="The DVC repository.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the gathered logdir here. [default: a temporary directory, removed on exit]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address TensorBoard binds.")
@click.option("--port", default=6006, show_default=True, type=int)
@click.option("--no-serve", is_flag=True, help="Only gather the logs into --out.")
@cli.stage_command
def main(repo, out, host, port, no_serve):
    """Copy runs/ of the baseline commit and of every finished experiment that `dvc exp show` lists
    from the DVC cache into one logdir, a TensorBoard run per experiment named by its name and the
    params it changed, then serve it. The workspace is not touched."""
    if no_serve and out is None:
        raise click.UsageError("--no-serve needs --out")
    with tempfile.TemporaryDirectory(prefix="fashion-exps-") as tmp:
        logdir = out or Path(tmp)
        labels = experiments.gather(repo.resolve(), logdir)
        if not labels:
            raise FashionError("no experiment has TensorBoard logs yet: run `dvc exp run` first")
        click.echo("runs: " + ", ".join(labels), err=True)
        if not no_serve:
            try:
                subprocess.run([Path(sys.executable).parent / "tensorboard", "--logdir", logdir,
                                "--host", host, "--port", str(port)], check=False)
            except KeyboardInterrupt:
                pass  # Ctrl-C is how a server is stopped


if __name__ == "__main__":
    main()
