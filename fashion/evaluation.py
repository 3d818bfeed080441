"""The evaluate stage: test-set predictions, metrics, PR curves and the confusion matrix."""

from pathlib import Path

import click
import torch
import torch.nn.functional as F

from fashion import data, determinism, dvccache, fileio, model, provenance
from fashion.errors import FashionError, memory_errors_explained
from fashion.tensorboard_writer import run_writer

PARAMS = ("device",)
CHUNK = 1000         # test images per forward pass: bounds memory, and fixes the kernels' shapes
CURVE_POINTS = 200   # most points per class in the DVC PR-curve files
PR_FILES = fileio.matching(*(f"{slug}.csv" for slug in data.CLASS_SLUGS))  # --pr-dir's files


@torch.no_grad()
def predict(net, images: torch.Tensor) -> torch.Tensor:
    """Logits (N, 10) on the CPU for normalised images (N, 1, 28, 28) on the net's device."""
    net.eval()
    return torch.cat([net(chunk).cpu() for chunk in images.split(CHUNK)])


def pr_curve(scores: torch.Tensor, positive: torch.Tensor):
    """Precision, recall and threshold at each distinct score, highest threshold first
    (scikit-learn's precision_recall_curve without its extra end point)."""
    order = torch.argsort(scores, descending=True, stable=True)
    scores, hits = scores.index_select(0, order).double(), positive.index_select(0, order).double()
    true_pos, false_pos = hits.cumsum(0), (1 - hits).cumsum(0)
    last_of_value = torch.ones_like(scores, dtype=torch.bool)
    last_of_value[:-1] = scores[1:] != scores[:-1]
    true_pos, false_pos = true_pos.masked_select(last_of_value), false_pos.masked_select(last_of_value)
    precision = true_pos / (true_pos + false_pos)
    recall = true_pos / hits.sum() if hits.sum() > 0 else torch.zeros_like(true_pos)
    return precision, recall, scores.masked_select(last_of_value)


def average_precision(precision: torch.Tensor, recall: torch.Tensor) -> float:
    """Sum of precision times recall gained at each threshold (scikit-learn's definition)."""
    gained = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((gained * precision).sum())


def pr_curves(probs: torch.Tensor, labels: torch.Tensor) -> list:
    """pr_curve of each class, its softmax probability as the score."""
    return [pr_curve(probs[:, c].contiguous(), labels == c) for c in range(len(data.CLASSES))]


def summarize(logits: torch.Tensor, labels: torch.Tensor, curves: list) -> dict:
    """Accuracy, loss, and per-class and macro precision, recall and average precision.

    A precision or recall with an empty denominator counts as 0, as scikit-learn's zero_division=0.
    """
    predicted = logits.argmax(dim=1)
    per_class = {}
    for c, name in enumerate(data.CLASSES):
        hit = (predicted == c) & (labels == c)
        predicted_c, actual_c = int((predicted == c).sum()), int((labels == c).sum())
        precision, recall, _ = curves[c]
        per_class[name] = {
            "precision": int(hit.sum()) / predicted_c if predicted_c else 0.0,
            "recall": int(hit.sum()) / actual_c if actual_c else 0.0,
            "average_precision": average_precision(precision, recall) if actual_c else 0.0,
        }
    macro = {key: sum(m[key] for m in per_class.values()) / len(per_class)
             for key in ("precision", "recall", "average_precision")}
    return {
        "accuracy": float((predicted == labels).double().mean()),
        "loss": float(F.cross_entropy(logits, labels)),
        "macro": macro,
        "per_class": per_class,
    }


def _thin(rows: list, most: int) -> list:
    """At most `most` evenly spaced rows, always keeping the first and the last."""
    if len(rows) <= most:
        return rows
    picks = sorted({round(i * (len(rows) - 1) / (most - 1)) for i in range(most)})
    return [rows[i] for i in picks]


def run(*, params: dict, data_dir: Path, model_path: Path, metrics_path: Path,
        provenance_path: Path, confusion_path: Path, pr_dir: Path, logdir: Path) -> dict:
    device = determinism.configure(params["device"])
    images, labels = data.load_split(data_dir, "test")
    dvccache.refuse_a_damaged_copy(model_path)  # a change inside the weights loads fine
    net = model.load(model_path)
    with memory_errors_explained(device):
        logits = predict(net.to(device), data.normalize(images).to(device))
    if not logits.isfinite().all():
        raise FashionError(f"{model_path} gives outputs that are not finite numbers, as a model "
                           "from diverged training does: retrain it with a lower lr")
    probs = F.softmax(logits, dim=1)
    curves = pr_curves(probs, labels)
    metrics = summarize(logits, labels, curves)

    click.echo(f"test accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f} "
               f"on {len(labels)} images", err=True)

    predicted = logits.argmax(dim=1)
    # Last, so that a stage interrupted at any earlier point has replaced none of its outputs.
    with fileio.outputs() as out:
        with run_writer(logdir, out) as writer:
            for c, name in enumerate(data.CLASSES):
                writer.add_pr_curve(name, labels == c, probs[:, c], global_step=0)
        out.file(confusion_path, ("actual,predicted\n" + "".join(
            f"{data.CLASSES[a]},{data.CLASSES[p]}\n"
            for a, p in zip(labels.tolist(), predicted.tolist()))).encode())
        pr = out.directory(pr_dir, PR_FILES)
        for slug, (precision, recall, threshold) in zip(data.CLASS_SLUGS, curves):
            rows = _thin(list(zip(threshold.tolist(), precision.tolist(), recall.tolist())),
                         CURVE_POINTS)
            (pr / f"{slug}.csv").write_text("threshold,precision,recall\n" + "".join(
                f"{t!r},{p!r},{r!r}\n" for t, p, r in rows))
        out.file(metrics_path, fileio.json_bytes(metrics))
        provenance.write(out, provenance_path, device, params, data_dir)
    return metrics
