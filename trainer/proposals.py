"""``dettool proposals``: run a trained RPN over a split and write a Fast R-CNN proposals file."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from dettool.config.schema import Config, RPNConfig
from dettool.data.proposals import save_proposals
from dettool.errors import ConfigError
from dettool.trainer import builder
from dettool.trainer.evaluate import load_trained_model


def write_proposals(cfg: Config, ckpt_path: str | Path, split: str, out: str | Path, device: str | None = None) -> Path:
    """Proposals of every image of ``split`` (test-time transform), in original pixels, to ``out``."""
    if not isinstance(cfg.model, RPNConfig):
        raise ConfigError(f"{cfg.source}: model.type must be 'rpn' to write proposals")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_trained_model(cfg, ckpt_path, dev)
    dataset = builder.build_dataset(cfg, split, augment=False)
    loader = builder.build_dataloader(cfg, dataset, train=False, batch_size=2)
    proposals: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for images, _, metas in tqdm(loader, desc=f"proposals {split}", unit="batch"):
            for meta, det in zip(metas, model.predict(images.to(dev), metas)):
                proposals[int(meta["image_id"])] = torch.cat([det.boxes, det.scores[:, None]], 1).cpu()
    save_proposals(out, proposals)
    print(f"dettool: wrote proposals of {len(proposals)} images to {out}")
    return Path(out)
