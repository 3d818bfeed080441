"""Evaluate the trained network on the test set (DVC stage 'evaluate')."""

import sys
from pathlib import Path

# Import fashion/ from this checkout, which is also right in the copies DVC runs experiments in.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fashion import cli, portable_cpu  # first: cli checks this Python has its packages
import click

if __name__ == "__main__":
    cli.quiet_ctrl_c_while_starting()  # the imports below load torch, a second's work
    portable_cpu.pin()  # PyTorch and MKL read it once, so before torch loads

from fashion import evaluation, params


@click.command(epilog=params.epilog(evaluation.PARAMS))
@cli.params_option
@cli.data_option
@click.option("--model", "model_path", default="models/model.pt", show_default=True,
              type=click.Path(path_type=Path), help="Weights written by the train stage.")
@click.option("--metrics", "metrics_path", default="metrics/evaluate.json", show_default=True,
              type=click.Path(path_type=Path), help="Test metrics (JSON).")
@cli.provenance_option("metrics/provenance/evaluate.json")
@click.option("--confusion", "confusion_path", default="plots/confusion.csv", show_default=True,
              type=click.Path(path_type=Path), help="Actual and predicted class per test image (CSV).")
@click.option("--pr-dir", default="plots/pr", show_default=True, type=click.Path(path_type=Path),
              help="One precision-recall CSV per class.")
@cli.logdir_option("runs/evaluate")
@cli.stage_command
def main(params_path, data_dir, model_path, metrics_path, provenance_path, confusion_path, pr_dir,
         logdir):
    """Predict the test set in one pass; write metrics, PR curves and confusion matrix data."""
    p = params.load(params_path, evaluation.PARAMS)
    evaluation.run(params=p, data_dir=data_dir, model_path=model_path, metrics_path=metrics_path,
                   provenance_path=provenance_path, confusion_path=confusion_path, pr_dir=pr_dir,
                   logdir=logdir)


if __name__ == "__main__":
    main()
