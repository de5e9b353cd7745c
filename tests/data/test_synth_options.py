"""The synthetic generator's options (``data.synth``): defaults write the original dataset byte for
byte; other values give a held-out set with other image sizes, object sizes and category ids."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from dettool.config import load_config
from dettool.config.schema.common import Invalid
from dettool.config.schema.data import SynthConfig
from dettool.data.synth import SynthOptions, generate

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# sha256 over (relative path, bytes) of every file of generate(num_train=3, num_val=2, seed=0),
# written by the generator before it had options (commit 31974d2)
DEFAULT_DIGEST = "3ea9d16fa593d2e247606be9e66977f88949cfc2640496b31c19ac68b2389e0c"


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_default_options_write_the_original_dataset(tmp_path):
    generate(tmp_path / "plain", num_train=3, num_val=2, seed=0)
    generate(tmp_path / "config", num_train=3, num_val=2, seed=0, options=SynthConfig().options())
    assert tree_digest(tmp_path / "plain") == DEFAULT_DIGEST
    assert tree_digest(tmp_path / "config") == DEFAULT_DIGEST


def test_held_out_options_change_sizes_and_ids(tmp_path):
    options = SynthOptions(image_width=(360, 400), image_height=(300, 340), object_size=(12.0, 16.0),
                           category_ids=(2, 5, 9, 17))
    generate(tmp_path, num_train=8, num_val=0, seed=7, options=options)
    data = json.loads((tmp_path / "annotations" / "train.json").read_text(encoding="utf-8"))
    assert [c["id"] for c in data["categories"]] == [2, 5, 9, 17]
    assert [c["name"] for c in data["categories"]] == ["box", "disc", "triangle", "cross"]
    assert all(360 <= im["width"] <= 400 and 300 <= im["height"] <= 340 for im in data["images"])
    assert data["annotations"] and {a["category_id"] for a in data["annotations"]} <= {2, 5, 9, 17}
    sides = np.array([max(a["bbox"][2], a["bbox"][3]) for a in data["annotations"]])
    # size 12-16 px, stretched by an aspect ratio up to e^0.5 and rasterised (+1 px)
    assert sides.max() <= 16 * np.exp(0.5) + 2 and sides.min() >= 12 * np.exp(-0.5) - 1


def test_same_options_same_files_other_category_ids_same_pixels(tmp_path):
    """Category ids are only written: the images are those of the default ids."""
    generate(tmp_path / "a", num_train=3, num_val=0, seed=5, options=SynthOptions(category_ids=(2, 5, 9, 17)))
    generate(tmp_path / "b", num_train=3, num_val=0, seed=5)
    names = sorted(p.name for p in (tmp_path / "a" / "train").iterdir())
    assert all((tmp_path / "a" / "train" / n).read_bytes() == (tmp_path / "b" / "train" / n).read_bytes()
               for n in names)
    ids = {1: 2, 3: 5, 7: 9, 12: 17}
    a = json.loads((tmp_path / "a" / "annotations" / "train.json").read_text(encoding="utf-8"))["annotations"]
    b = json.loads((tmp_path / "b" / "annotations" / "train.json").read_text(encoding="utf-8"))["annotations"]
    assert [x["category_id"] for x in a] == [ids[x["category_id"]] for x in b]


def test_config_keys_default_to_the_generator_constants():
    cfg = load_config(Path(__file__).parents[2] / "configs" / "faster_rcnn_r18_fpn_synth.yaml",
                      ["data.synth.seed=7", "data.synth.object_size=[12,160]", "data.synth.category_ids=[2,5,9,17]"])
    assert cfg.data.synth.options() == SynthOptions(object_size=(12.0, 160.0), category_ids=(2, 5, 9, 17))
    assert SynthConfig().options() == SynthOptions()


@pytest.mark.parametrize("key, value, message", [
    ("object_size", (50.0, 10.0), "min must not exceed max"),
    ("image_width", (4, 4), "at least 8 pixels"),
    ("category_ids", (1, 1, 7, 12), "ids must differ"),
    ("object_size", (0.0, 10.0), "> 0"),
])
def test_bad_options_are_refused(key, value, message):
    with pytest.raises(Invalid, match=message):
        SynthConfig(**{key: value})


def test_first_use_generation_follows_the_config(tmp_path):
    from dettool.trainer import builder

    root = tmp_path / "held_out"
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "retinanet_r18_fpn_synth.yaml", [
        f"data.train.ann_file={root / 'annotations/train.json'}", f"data.train.img_dir={root / 'train'}",
        f"data.val.ann_file={root / 'annotations/val.json'}", f"data.val.img_dir={root / 'val'}",
        "data.synth.num_train=2", "data.synth.num_val=2", "data.synth.category_ids=[2,5,9,17]",
        "data.synth.image_width=[100,120]", "data.synth.image_height=[90,100]", "data.category_ids=[2,5,9,17]"])
    dataset = builder.build_dataset(cfg, "val")
    assert dataset.cat_ids == [2, 5, 9, 17]
    for info in dataset.coco.imgs.values():
        assert 100 <= info["width"] <= 120 and 90 <= info["height"] <= 100


def test_a_folder_generated_with_other_settings_is_refused(tmp_path):
    from dettool.errors import ConfigError
    from dettool.trainer import builder

    root = tmp_path / "synth"
    base = [f"data.train.ann_file={root / 'annotations/train.json'}", f"data.train.img_dir={root / 'train'}",
            f"data.val.ann_file={root / 'annotations/val.json'}", f"data.val.img_dir={root / 'val'}",
            "data.synth.num_train=2", "data.synth.num_val=2"]
    config = Path(__file__).resolve().parents[2] / "configs" / "retinanet_r18_fpn_synth.yaml"
    builder.build_dataset(load_config(config, base), "val")
    assert json.loads((root / "synth.json").read_text())["seed"] == 0
    builder.build_dataset(load_config(config, base), "val")  # the same settings: reused
    with pytest.raises(ConfigError, match=r"data.synth.seed: .* was generated with seed=0, the config asks for 7"):
        builder.build_dataset(load_config(config, [*base, "data.synth.seed=7"]), "val")
