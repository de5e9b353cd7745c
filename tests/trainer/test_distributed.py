"""Two-process torchrun training on the CPU (gloo): replicas must end with identical weights."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_torchrun_two_processes_keep_replicas_identical(tiny_synth, tmp_path):
    work = tmp_path / "work"
    sets = [
        f"data.train.ann_file={tiny_synth / 'annotations/train.json'}",
        f"data.train.img_dir={tiny_synth / 'train'}",
        f"data.val.ann_file={tiny_synth / 'annotations/val.json'}",
        f"data.val.img_dir={tiny_synth / 'val'}",
        "data.synth=null", "data.num_workers=0", "data.train_scale=160x128", "data.test_scale=160x128",
        "train.batch_size=2", "train.max_iters=3", "train.eval_interval=0", "train.channels_last=false",
        "train.custom_hooks=[{type: 'replica_dump_hook:ReplicaDumpHook'}]",
        f"work_dir={work}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "dettool", "train", str(ROOT / "configs/retinanet_r18_fpn_synth.yaml"), "--device", "cpu"]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(work / "replica_rank0.pt", weights_only=True)
    r1 = torch.load(work / "replica_rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"replicas differ at {k}"
    # Training really happened: rank 0's checkpoint after 3 steps differs from a fresh model.
    assert (work / "iter_3.pth").is_file()
    saved = torch.load(work / "iter_3.pth", weights_only=True)
    assert saved["iter"] == 3
    from dettool.config import load_config
    from dettool.trainer.builder import build_model

    torch.manual_seed(0)
    fresh = dict(build_model(load_config(ROOT / "configs/retinanet_r18_fpn_synth.yaml")).named_parameters())
    moved = [k for k in r0 if not torch.equal(r0[k], fresh[k].detach())]
    assert len(moved) > len(r0) // 2
