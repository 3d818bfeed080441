import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensorboard.util import tensor_util

from fashion import data, evaluation, model
from fashion.data import CLASS_SLUGS, CLASSES
from fashion.errors import FashionError
from tests.events import summaries
from tests.faults import allocate_too_much


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


def test_summarize_loss_and_classes_never_predicted_or_absent():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])  # classes 3 to 9 absent
    logits = torch.randn(6, 10, generator=g)
    logits[:, 2] -= 100  # class 2 never predicted
    metrics = evaluation.summarize(logits, labels, evaluation.pr_curves(logits.softmax(1), labels))
    assert metrics["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)))
    assert metrics["per_class"][CLASSES[2]]["precision"] == 0.0  # nothing predicted: 0, not 1
    assert metrics["per_class"][CLASSES[2]]["recall"] == 0.0
    for absent in CLASSES[3:]:
        assert metrics["per_class"][absent]["recall"] == 0.0
        assert metrics["per_class"][absent]["average_precision"] == 0.0


def test_predict_in_chunks_gives_the_logits_of_one_pass(monkeypatch):
    net = model.initial_net(0)
    images = torch.randn(23, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    whole = evaluation.predict(net, images)
    monkeypatch.setattr(evaluation, "CHUNK", 5)  # 4 whole chunks and a short one, in order
    assert torch.allclose(evaluation.predict(net, images), whole, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(whole, net(images), rtol=0, atol=1e-6)


def test_evaluating_out_of_memory_is_one_sentence_and_writes_nothing(tmp_path, data_dir,
                                                                    monkeypatch):
    model.save(model.initial_net(0), tmp_path / "model.pt")
    monkeypatch.setattr(evaluation, "predict", allocate_too_much)
    out = tmp_path / "out"
    with pytest.raises(FashionError, match=r"^out of cpu memory; close other programs$"):
        evaluation.run(params={"device": "cpu"}, data_dir=data_dir, model_path=tmp_path / "model.pt",
                       metrics_path=out / "eval.json", provenance_path=out / "prov.json",
                       confusion_path=out / "confusion.csv", pr_dir=out / "pr", logdir=out / "runs")
    assert not out.exists()


def test_thin_keeps_ends_and_bounds_length():
    rows = list(range(1000))
    thin = evaluation._thin(rows, 200)
    assert len(thin) == 200 and thin[0] == 0 and thin[-1] == 999
    assert evaluation._thin(rows[:5], 200) == rows[:5]


def evaluate(tmp_path, data_dir, net) -> tuple[dict, Path]:
    """The evaluate stage in this process on `net`'s weights, every output under tmp_path/out."""
    model.save(net, tmp_path / "model.pt")
    out = tmp_path / "out"
    metrics = evaluation.run(params={"device": "cpu"}, data_dir=data_dir,
                             model_path=tmp_path / "model.pt", metrics_path=out / "eval.json",
                             provenance_path=out / "prov.json", confusion_path=out / "confusion.csv",
                             pr_dir=out / "pr", logdir=out / "runs")
    return metrics, out


def test_the_stage_s_outputs_agree_with_a_plain_forward_pass(tmp_path, data_dir):
    net = model.initial_net(4)
    metrics, out = evaluate(tmp_path, data_dir, net)
    # The reference: the whole test set in one forward pass, and the formulas written out here.
    images, labels = data.load_split(data_dir, "test")
    with torch.no_grad():
        logits = net.eval()(images.unsqueeze(1).float() / 255 * 2 - 1)
    predicted = logits.argmax(1)
    assert json.loads((out / "eval.json").read_text()) == metrics
    assert metrics["accuracy"] == pytest.approx((predicted == labels).float().mean().item())
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    rows = (out / "confusion.csv").read_text().splitlines()
    assert rows == ["actual,predicted"] + [f"{CLASSES[a]},{CLASSES[p]}"
                                            for a, p in zip(labels.tolist(), predicted.tolist())]
    probs = logits.softmax(1)
    assert sorted(p.name for p in (out / "pr").iterdir()) == sorted(f"{s}.csv" for s in CLASS_SLUGS)
    for c, slug in enumerate(CLASS_SLUGS):
        lines = (out / "pr" / f"{slug}.csv").read_text().splitlines()
        assert lines[0] == "threshold,precision,recall"
        curve = [tuple(map(float, line.split(","))) for line in lines[1:]]
        # One row per distinct score of the class, highest first, down to every image counted.
        assert len(curve) == len(set(probs[:, c].tolist()))
        assert curve[0][0] == pytest.approx(probs[:, c].max().item(), rel=1e-5)
        assert curve[-1][2] == 1.0 and [t for t, _, _ in curve] == sorted(t for t, _, _ in curve)[::-1]
        assert curve[-1][1] == pytest.approx((labels == c).float().mean().item())
    pr = summaries(out / "runs")
    assert sorted(pr) == sorted(CLASSES) and all(len(v) == 1 and v[0][0] == 0 for v in pr.values())
    for c, name in enumerate(CLASSES):
        # TensorBoard's rows: true and false positives, ... at each threshold, the lowest first.
        counts = tensor_util.make_ndarray(pr[name][0][1].tensor)
        assert (counts[0, 0], counts[1, 0]) == ((labels == c).sum(), (labels != c).sum())
    record = json.loads((out / "prov.json").read_text())
    assert record["device"] == "cpu"
    assert record["params_sha256"] == hashlib.sha256(b'{"device": "cpu"}').hexdigest()
    # A second run replaces the outputs of the first, per-class files included.
    first = {p.name: p.read_bytes() for p in (out / "pr").iterdir()}
    evaluate(tmp_path, data_dir, net)
    assert {p.name: p.read_bytes() for p in (out / "pr").iterdir()} == first


def test_a_model_whose_outputs_are_not_finite_is_refused_and_writes_nothing(tmp_path, data_dir):
    net = model.initial_net(0)
    with torch.no_grad():
        net.fc3.bias.fill_(float("nan"))
    with pytest.raises(FashionError, match=r"model.pt gives outputs that are not finite numbers, "
                                           r"as a model from diverged training does: retrain it "
                                           r"with a lower lr$"):
        evaluate(tmp_path, data_dir, net)
    assert not (tmp_path / "out").exists()


def test_the_pr_files_are_thinned_to_curve_points_keeping_both_ends(tmp_path, data_dir,
                                                                    monkeypatch):
    monkeypatch.setattr(evaluation, "CURVE_POINTS", 5)
    _, out = evaluate(tmp_path, data_dir, model.initial_net(4))
    for slug in CLASS_SLUGS:
        lines = (out / "pr" / f"{slug}.csv").read_text().splitlines()
        assert len(lines) == 1 + 5 and lines[-1].endswith(",1.0")


@pytest.mark.parametrize("positives", [0, 1, 2])
def test_pr_curve_recall_counts_the_class_s_images(positives):
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    positive = torch.arange(4) < positives
    precision, recall, threshold = evaluation.pr_curve(scores, positive)
    assert threshold.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])
    # By hand: the first k images taken, of which min(k, positives) are the class's.
    expected = [min(k, positives) / positives if positives else 0.0 for k in (1, 2, 3, 4)]
    assert recall.tolist() == expected
    assert precision.tolist() == [min(k, positives) / k for k in (1, 2, 3, 4)]


def test_an_output_that_cannot_be_written_leaves_every_output_as_it_was(tmp_path, data_dir):
    (tmp_path / "out/confusion.csv").mkdir(parents=True)  # a directory where the file goes
    with pytest.raises(IsADirectoryError):
        evaluate(tmp_path, data_dir, model.initial_net(4))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["confusion.csv"]
