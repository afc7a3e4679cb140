"""Tables: numbers come from the workflow's files, the paper's sit beside them."""

import csv
import json

import pytest

from sae import tables


def _eval_dir(path, recall, mAP):
    path.mkdir(parents=True)
    level = {"recall": recall, "mAP": mAP, "per_class": {}}
    (path / "metrics.json").write_text(json.dumps({"moderate": level, "all": {**level, "mAP": mAP / 2}}))
    return path


def _attack_dir(path, combo, method, recall, mAP, raised=0.5, **config):
    _eval_dir(path / "eval", recall, mAP)
    summary = {"config": {"combo": combo, "method": method, **config}, "examples": 50, "raised": raised}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_attack_table_reads_our_numbers_and_quotes_the_paper(tmp_path):
    benign = _eval_dir(tmp_path / "benign", 90.0, 80.0)
    a = _attack_dir(tmp_path / "a", "rotate+translate+mesh", "isfgsm", 88.0, 60.0, raised=0.9)
    b = _attack_dir(tmp_path / "b", "rotate+translate+mesh", "random", 89.0, 75.0)
    rows = tables.attack_rows(str(benign), [str(a), str(b)], "moderate", tables.PAPER_TABLE2)
    assert rows[0]["combo"] == "benign" and rows[0]["paper_mAP"] == 99.4
    # the paper calls it translate+rotate+mesh; the gradient row gets its number, random search none
    assert rows[1]["paper_mAP"] == 65.9 and rows[1]["delta_mAP"] == pytest.approx(-20.0)
    assert rows[1]["raised"] == pytest.approx(90.0)
    assert rows[2]["paper_mAP"] is None
    tables.write_table(rows, tables.ATTACK_COLUMNS, tmp_path / "t", "Table 2")
    md = (tmp_path / "t.md").read_text()
    # iterative sFGSM's ball is the one its 6 steps reach; no queries were recorded here
    assert "| rotate+translate+mesh | isfgsm | 6ε | – | 50 | 88.0 | 60.0 | 80.0 | -20.0 | 90.0 | 100.0 | 65.9 |" in md
    with open(tmp_path / "t.csv") as fh:
        got = list(csv.DictReader(fh))
    assert float(got[1]["mAP"]) == 60.0 and got[2]["paper_mAP"] == ""
    # sFGSM over random search's ball, and a pixel attack: their reach is in the ball column
    c = _attack_dir(tmp_path / "c", "rotate+translate+mesh", "sfgsm", 80.0, 50.0, radius=6)
    (tmp_path / "c" / "summary.json").write_text(
        json.dumps({**json.loads((tmp_path / "c" / "summary.json").read_text()), "queries": 2})
    )
    _eval_dir(tmp_path / "p" / "eval", 40.0, 10.0)
    (tmp_path / "p" / "summary.json").write_text(
        json.dumps({"config": {"eps": 8 / 255, "steps": 10}, "examples": 50, "raised": 1.0, "queries": 11})
    )
    rows = tables.attack_rows(str(benign), [str(c), str(tmp_path / "p")], "moderate")
    assert (rows[1]["method"], rows[1]["ball"], rows[1]["queries"]) == ("sfgsm", "6ε", 2)
    assert rows[1]["paper_mAP"] is None  # the paper's number belongs to its own attack
    assert (rows[2]["method"], rows[2]["ball"], rows[2]["queries"]) == ("pgd", "8/255", 11)
    # another difficulty level is another table
    rows = tables.attack_rows(str(benign), [str(a)], "all")
    assert rows[1]["mAP"] == 30.0


def _stored(path, names):
    """A ``detections.npz`` for frames ``names`` (no boxes: only the names matter here)."""
    import torch

    from sae.metrics.store import save_detections

    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    save_detections(path / "detections.npz", names, [empty] * len(names), [empty] * len(names), (94, 310), (94, 310))


def test_each_attack_row_is_compared_with_the_benign_frames_it_attacked(tmp_path):
    """Attacks on two frame subsets (`attacks.examples` and `attacks.other_examples`): each row's
    Δ mAP is against the benign evaluation of its own frames; frames nobody evaluated are an error."""
    many, few = ["a", "b", "c", "d"], ["a", "d"]
    benign = _eval_dir(tmp_path / "benign", 90.0, 80.0)
    benign_few = _eval_dir(tmp_path / "benign-few", 90.0, 70.0)
    _stored(benign, many)
    _stored(benign_few, few)
    a = _attack_dir(tmp_path / "a", "translate+rotate+mesh", "isfgsm", 88.0, 60.0)
    b = _attack_dir(tmp_path / "b", "color+weather", "isfgsm", 88.0, 65.0)
    _stored(a / "eval", list(reversed(many)))  # order does not matter, the frames do
    _stored(b / "eval", few)
    rows = tables.attack_rows([str(benign), str(benign_few)], [str(a), str(b)], "moderate")
    assert [r["benign_mAP"] for r in rows] == [80.0, 80.0, 70.0]
    assert rows[1]["delta_mAP"] == pytest.approx(-20.0) and rows[2]["delta_mAP"] == pytest.approx(-5.0)
    # frames that no benign evaluation holds: an error naming the attack
    with pytest.raises(ValueError, match=r"b/eval.*2 frames"):
        tables.attack_rows([str(benign), str(benign_few / "elsewhere")], [str(a), str(b)], "moderate")
    # one benign evaluation is every row's (the caller's word: a pixel set names frames otherwise)
    rows = tables.attack_rows(str(benign), [str(a), str(b)], "moderate")
    assert [r["benign_mAP"] for r in rows] == [80.0, 80.0, 80.0]
    # several benign evaluations need stored frames to choose between them
    c = _attack_dir(tmp_path / "c", "color", "isfgsm", 88.0, 65.0)
    with pytest.raises(FileNotFoundError, match="c/eval"):
        tables.attack_rows([str(benign), str(benign_few)], [str(c)], "moderate")


def test_missing_inputs_are_named(tmp_path):
    benign = _eval_dir(tmp_path / "benign", 90.0, 80.0)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tables.attack_rows(str(benign), [str(tmp_path / "nowhere")], "moderate")
    with pytest.raises(KeyError, match="hard"):
        tables.attack_rows(str(benign), [], "hard")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad"):
        tables.metrics_at(tmp_path / "bad", "moderate")


def test_model_table_puts_each_validation_set_beside_the_paper(tmp_path):
    for recipe, (sae_map, benign_map) in {"baseline": (40.0, 70.0), "tuned-sae": (55.0, 65.0)}.items():
        _eval_dir(tmp_path / recipe / "sae", 80.0, sae_map)
        _eval_dir(tmp_path / recipe / "benign", 85.0, benign_map)
    models = [(r, str(tmp_path / r)) for r in ("baseline", "tuned-sae")]
    rows = tables.model_rows(models, ["sae", "benign"], "moderate", tables.PAPER_TABLE3)
    assert rows[0]["label"] == "Baseline" and rows[1]["label"] == "Tuned (SAE)"
    assert rows[1]["sae_mAP"] == 55.0 and rows[1]["paper_sae_mAP"] == 72.63
    assert rows[0]["benign_mAP"] == 70.0 and rows[0]["paper_benign_mAP"] == 86.17
    tables.write_table(rows, tables.model_columns(["sae", "benign"]), tmp_path / "t3", "Table 3")
    md = (tmp_path / "t3.md").read_text()
    assert "| tuned-sae | Tuned (SAE) | 80.0 | 55.0 | 92.2 | 72.6 | 85.0 | 65.0 | 91.9 | 79.1 |" in md
    # the paper gives YOLOv3's mAP but no recall: an empty cell, not a made-up number
    _eval_dir(tmp_path / "y" / "sae", 70.0, 50.0)
    row = tables.model_rows([("yolov3", str(tmp_path / "y"))], ["sae"], "moderate", tables.PAPER_TRANSFER)[0]
    assert row["paper_sae_mAP"] == 87.50 and row["paper_sae_recall"] is None and row["label"] == "yolov3"
    with pytest.raises(FileNotFoundError, match="pixel"):
        tables.model_rows(models, ["pixel"], "moderate")
