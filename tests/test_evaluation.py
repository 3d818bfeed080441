import pytest
import torch

from fashion import evaluation
from fashion.data import CLASSES


def brute_force_ap(scores, positive):
    """Average precision straight from its definition: mean precision at each positive's rank,
    with tied scores sharing the precision of their whole group."""
    total, hits = 0.0, int(positive.sum())
    for s in scores[positive].tolist():
        at_or_above = scores >= s
        total += float(positive[at_or_above].sum()) / float(at_or_above.sum())
    return total / hits


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_its_definition(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 20, (60,), generator=g).float() / 20  # many ties
    positive = torch.rand(60, generator=g) < 0.3
    precision, recall, _ = evaluation.pr_curve(scores, positive)
    assert evaluation.average_precision(precision, recall) == pytest.approx(brute_force_ap(scores, positive))


def test_pr_curve_runs_from_high_threshold_to_full_recall():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    positive = torch.tensor([True, False, True, False])
    precision, recall, thresholds = evaluation.pr_curve(scores, positive)
    assert thresholds.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.1])
    assert precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.5])
    assert recall.tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])


def test_summarize_perfect_and_known_predictions():
    labels = torch.arange(10).repeat(3)
    perfect = torch.nn.functional.one_hot(labels, 10).float() * 10
    metrics = evaluation.summarize(perfect, labels, evaluation.pr_curves(perfect.softmax(1), labels))
    assert metrics["accuracy"] == 1.0
    assert metrics["macro"] == {"precision": 1.0, "recall": 1.0, "average_precision": 1.0}
    assert list(metrics["per_class"]) == list(CLASSES)

    wrong = perfect.clone()
    wrong[0] = torch.nn.functional.one_hot(torch.tensor(1), 10).float() * 10  # a T-shirt called Trouser
    metrics = evaluation.summarize(wrong, labels, evaluation.pr_curves(wrong.softmax(1), labels))
    assert metrics["accuracy"] == pytest.approx(29 / 30)
    assert metrics["per_class"]["T-shirt/top"]["recall"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["Trouser"]["precision"] == pytest.approx(3 / 4)


def test_thin_keeps_ends_and_bounds_length():
    rows = list(range(1000))
    thin = evaluation._thin(rows, 200)
    assert len(thin) == 200 and thin[0] == 0 and thin[-1] == 999
    assert evaluation._thin(rows[:5], 200) == rows[:5]
