"""``Detector``: images in as the dataset loader reads them, detections out in original pixels.

Quick tests use a random tiny Faster / Mask R-CNN checkpoint (eager torch) and a hand-made ONNX
graph with the deploy graph's inputs and outputs; the ``slow`` one runs the session's exported
tiny Mask R-CNN against its checkpoint on awkward images.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from runtime_helpers import FASTER_RCNN, MASK_RCNN, random_detector, tiny_sets
from test_backends import fake_deploy_graph, fake_metadata

from dettool.config import load_config
from dettool.data.coco import load_image
from dettool.errors import BackendError, DataError
from dettool.runtime import Detector, tensorrt_installed
from dettool.runtime.detector import model_kind, read_image
from dettool.runtime.metadata import Preprocess, sidecar_path
from dettool.runtime.parity import OutputDiff
from dettool.structures.detections import Detections
from dettool.trainer import builder


def tiny_checkpoint(tiny_synth, tmp_path, config=FASTER_RCNN, **meta) -> tuple[str, list[str]]:
    sets = tiny_sets(tiny_synth)
    cfg = load_config(config, sets)
    path = tmp_path / "tiny.pth"
    torch.save({"model": random_detector(cfg).state_dict(), "meta": meta}, path)
    return path, sets


def awkward_images(folder) -> dict[str, object]:
    """Grayscale, RGBA, palette, EXIF-rotated and plain RGB files (the kinds a user hands over)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)
    files = {}
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    files["gray"] = folder / "gray.png"
    rgba = np.concatenate([rgb, rng.integers(0, 255, (70, 90, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    files["rgba"] = folder / "alpha.png"
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    files["palette"] = folder / "palette.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.fromarray(rgb).save(folder / "rotated ü.jpg", exif=exif, quality=95)
    files["exif"] = folder / "rotated ü.jpg"
    Image.fromarray(rgb).save(folder / "plain.jpg", quality=95)
    files["rgb"] = folder / "plain.jpg"
    return files


def test_read_image_matches_the_dataset_loader(tmp_path):
    files = awkward_images(tmp_path)
    for path in files.values():
        ref = load_image(path)
        for source in (path, str(path), Image.open(path), np.asarray(Image.open(path))):
            got = read_image(source)
            assert got.mode == "RGB"
            if isinstance(source, np.ndarray) and source.ndim == 2 and Image.open(path).mode == "P":
                continue  # a palette image as an array is its indices: nothing to compare
            if isinstance(source, np.ndarray) and path == files["exif"]:
                assert got.size == (90, 70)  # an array has no EXIF: as stored
                continue
            np.testing.assert_array_equal(np.asarray(got), np.asarray(ref), err_msg=f"{path} as {type(source)}")
    assert read_image(files["exif"]).size == (70, 90)  # EXIF orientation 6: stored 90 x 70, seen 70 x 90
    gray = np.asarray(read_image(files["gray"]))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), np.float32), 3.0])
def test_read_image_refuses_other_inputs_in_one_line(bad):
    with pytest.raises(DataError) as err:
        read_image(bad)
    assert "\n" not in str(err.value)


def test_prepare_equals_the_eval_data_loader(tiny_synth, tmp_path):
    """The batch a Detector feeds its backend is the batch ``dettool eval`` feeds the model."""
    path, sets = tiny_checkpoint(tiny_synth, tmp_path)
    cfg = load_config(FASTER_RCNN, sets)
    detector = Detector.load(path, FASTER_RCNN, overrides=sets, device="cpu")
    dataset = builder.build_dataset(cfg, "val")
    loader = builder.build_dataloader(cfg, dataset, train=False, batch_size=3)
    images, _, metas = next(iter(loader))
    files = [dataset.img_dir / m["file_name"] for m in metas]
    batch, got = detector.prepare([read_image(f) for f in files])
    torch.testing.assert_close(batch, images, rtol=0, atol=0)
    for ref, meta in zip(metas, got):
        for key in ("ori_shape", "img_shape", "scale_factor", "pad_shape"):
            assert tuple(meta[key]) == tuple(ref[key]), key
    # ... and its results are the model's predictions on that batch, with names and ids
    results = detector(files, batch_size=3)
    expected = detector.backend.model.predict(images, metas)
    for res, ref in zip(results, expected):
        np.testing.assert_array_equal(res.boxes, ref.boxes.numpy())
        np.testing.assert_array_equal(res.scores, ref.scores.numpy())
        assert res.class_names == [f"class_{k}" for k in ref.labels.tolist()]
        assert res.cat_ids.tolist() == [k + 1 for k in ref.labels.tolist()]
    assert results[0].file_name == files[0].name


def test_checkpoint_classes_and_masks(tiny_synth, tmp_path):
    path, sets = tiny_checkpoint(tiny_synth, tmp_path, MASK_RCNN, class_names=["w", "x", "y", "z"],
                                 cat_ids=[2, 4, 6, 8])
    detector = Detector.load(path, MASK_RCNN, overrides=[*sets, "test.score_thr=0.0"], device="cpu")
    assert detector.with_masks and detector.class_names == ["w", "x", "y", "z"]
    image = tiny_synth / "val" / "000000.jpg"
    (result,) = detector(image)
    assert len(result) > 0
    h, w = load_image(image).height, load_image(image).width
    assert result.masks.shape == (len(result), h, w) and result.masks.dtype == bool
    assert set(result.cat_ids.tolist()) <= {2, 4, 6, 8}
    assert result.class_names == [["w", "x", "y", "z"][k] for k in result.labels]
    rows = result.to_coco(image_id=5)
    assert len(rows) == len(result) and rows[0]["segmentation"]["size"] == [h, w]
    assert rows[0]["file_name"] == "000000.jpg" and rows[0]["image_id"] == 5
    # the score threshold drops rows, masks with them
    kept = detector(image, score_thr=float(np.median(result.scores)))[0]
    assert 0 < len(kept) < len(result) and kept.masks.shape[0] == len(kept)


def test_a_deploy_graph_alone(tmp_path):
    """An ONNX graph with its metadata: resize, normalisation and rescaling from the metadata."""
    path = tmp_path / "fake.onnx"
    onnx.save(fake_deploy_graph(), path)
    meta = fake_metadata(preprocess=Preprocess("128x96", (10.0, 20.0, 30.0), (2.0, 2.0, 2.0), 32),
                         class_names=("cat", "dog"), cat_ids=(17, 18))
    sidecar_path(path).write_text(meta.to_json())
    detector = Detector.load(path, threads=1)
    assert detector.backend.name == "onnxruntime" and detector.cat_ids.tolist() == [17, 18]
    options = detector.backend.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    pixels = np.full((192, 256, 3), 50, np.uint8)  # keep ratio into 128x96: 128 x 96, scale 0.5
    results = detector([pixels, Image.fromarray(pixels[:96, :128])], batch_size=2)
    for res, (h, w) in zip(results, [(192, 256), (96, 128)]):
        assert res.image_size == (h, w)
        # the fake graph's score is the mean of the normalised, zero-padded batch image
        assert res.scores[0] == pytest.approx(((50 - 10) / 2 + (50 - 20) / 2 + (50 - 30) / 2) / 3, rel=1e-5)
        # its box is (h, w, h, w) of the resized image, clipped and scaled back to the original
        np.testing.assert_allclose(res.boxes[0], [h, h, h, h], rtol=1e-5)
        assert res.class_names == ["cat"] and res.cat_ids.tolist() == [17] and res.masks is None


def test_wrong_files_in_one_line(tmp_path, tiny_synth):
    with pytest.raises(BackendError, match="model file not found"):
        Detector.load(tmp_path / "missing.onnx")
    path, sets = tiny_checkpoint(tiny_synth, tmp_path)
    with pytest.raises(BackendError, match="needs its config"):
        Detector.load(path)
    onnx_path = tmp_path / "fake.onnx"
    onnx.save(fake_deploy_graph(), onnx_path)
    sidecar_path(onnx_path).write_text(fake_metadata().to_json())
    with pytest.raises(BackendError, match="config is only for a checkpoint"):
        Detector.load(onnx_path, FASTER_RCNN)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"DTTRTENG" + bytes(64))
    assert model_kind(engine) == "tensorrt" and model_kind(path) == "torch" and model_kind(onnx_path) == "onnxruntime"
    if not tensorrt_installed():
        with pytest.raises(BackendError, match="TensorRT is not installed"):
            Detector.load(engine)


@pytest.mark.slow
def test_onnx_graph_and_checkpoint_give_the_same_detections(tiny_export, tmp_path):
    sets = [*tiny_export.sets, "test.score_thr=0.01"]
    from_graph = Detector.load(tiny_export.custom, device="cpu")
    from_checkpoint = Detector.load(tiny_export.checkpoint, MASK_RCNN, overrides=sets, device="cpu")
    files = list(awkward_images(tmp_path).values())
    diff = OutputDiff()
    for a, b in zip(from_checkpoint(files, batch_size=2), from_graph(files, batch_size=3)):
        as_dets = [Detections(torch.from_numpy(r.boxes), torch.from_numpy(r.scores), torch.from_numpy(r.labels),
                              torch.from_numpy(r.masks)) for r in (a, b)]
        diff.add(*as_dets)
    summary = diff.summary()
    assert summary["matched"] > 0 and summary["matched_fraction"] == 1.0, summary
    assert summary["box_linf_px_max"] < 1e-2 and summary["score_diff_max"] < 1e-4, summary


def test_an_rpn_returns_class_agnostic_proposals(tiny_synth, tmp_path):
    from runtime_helpers import CONFIGS

    rpn = CONFIGS / "rpn_r18_fpn_synth.yaml"
    path, sets = tiny_checkpoint(tiny_synth, tmp_path, rpn, class_names=["w", "x", "y", "z"], cat_ids=[2, 4, 6, 8])
    detector = Detector.load(path, rpn, overrides=sets, device="cpu")
    (result,) = detector(tiny_synth / "val" / "000000.jpg")
    assert detector.proposals_only and len(result) > 0
    assert set(result.class_names) == {"proposal"} and set(result.cat_ids.tolist()) == {2}
