"""Proposal recall (AR@N, class-agnostic) through pycocotools, on a hand-made ground truth."""
from __future__ import annotations

import contextlib
import io

import pytest
from pycocotools.coco import COCO

from dettool.evaluation.proposal_eval import format_recall_table, proposal_recall

# two images, three 100 x 100 boxes of two categories (proposals ignore categories)
GT_BOXES = {1: [[10.0, 20.0, 100.0, 100.0], [200.0, 150.0, 100.0, 100.0]], 2: [[50.0, 50.0, 100.0, 100.0]]}


def _coco() -> COCO:
    anns, k = [], 0
    for image_id, boxes in GT_BOXES.items():
        for b in boxes:
            k += 1
            anns.append({"id": k, "image_id": image_id, "category_id": 1 + k % 2, "bbox": b, "area": b[2] * b[3],
                         "iscrowd": 0})
    data = {"images": [{"id": i, "file_name": f"{i}.png", "width": 400, "height": 300} for i in GT_BOXES],
            "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _proposals(dx: float = 0.0, score: float = 0.9) -> list[dict]:
    return [{"image_id": i, "bbox": [b[0] + dx, b[1], b[2], b[3]], "score": score}
            for i, boxes in GT_BOXES.items() for b in boxes]


def test_perfect_proposals_recall_everything(capsys):
    recall = proposal_recall(_coco(), _proposals())
    assert recall == {"AR@100": pytest.approx(1.0), "AR@300": pytest.approx(1.0), "AR@1000": pytest.approx(1.0)}
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced


def test_iou_0_6_recalls_three_of_ten_thresholds():
    # shifted by 25 px: intersection 75 x 100, union 125 x 100, IoU exactly 0.6, a match at
    # thresholds .50, .55 and .60 out of .50:.05:.95
    recall = proposal_recall(_coco(), _proposals(dx=25.0))
    assert recall == {k: pytest.approx(0.3) for k in ("AR@100", "AR@300", "AR@1000")}


def test_max_dets_keep_the_highest_scoring_proposals():
    # per image, better-scored junk first: one proposal per image finds nothing, ten find every gt
    junk = [{"image_id": i, "bbox": [0.0, 280.0, 5.0, 5.0], "score": 0.99} for i in GT_BOXES]
    recall = proposal_recall(_coco(), junk + _proposals(score=0.5), max_dets=(1, 10))
    assert recall == {"AR@1": 0.0, "AR@10": pytest.approx(1.0)}


def test_no_proposals_give_zero_recall():
    assert proposal_recall(_coco(), []) == {"AR@100": 0.0, "AR@300": 0.0, "AR@1000": 0.0}


def test_format_recall_table():
    table = format_recall_table({"AR@100": 0.5, "AR@1000": 0.75})
    assert table.splitlines() == ["| metric | value |", "|---|---|", "| AR@100 | 0.5000 |", "| AR@1000 | 0.7500 |"]
