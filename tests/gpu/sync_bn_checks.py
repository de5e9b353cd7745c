"""SyncBN over two processes on one device equals plain BN over the whole batch.

Part ``syncbn`` of tests/gpu/check_gpu.py. ``sync_bn_check`` launches this file under
``torchrun --nproc_per_node=2``. Both ranks build dettool's ResNet-18 backbone (the synth
RetinaNet's, ``model.backbone.norm=syncbn``, seed 0: identical weights) on the same device, take
one half of a batch of ``BATCH`` random images each and run one training forward and backward
(loss: the sum over images of each output level's mean square, so the two ranks' losses add up
to the whole batch's). Rank 0 then builds the same backbone with plain BN, runs the whole batch,
and saves both ranks' BN running statistics and all-reduced (summed) gradients beside the plain
ones, and the statistics plain BN gets from rank 0's half alone (what no synchronisation gives).
``compare_sync_bn`` checks that both ranks' statistics and the summed gradients equal the
whole-batch ones within ``RTOL`` x max |whole-batch value| per tensor, and that the half-batch
statistics do not (so the check can fail).

Backend: **gloo with CUDA tensors**, both ranks on ``cuda:0``. NCCL refuses two ranks on one
GPU ("Duplicate GPU detected"), and this check must run on a one-GPU machine. PyTorch's
SyncBatchNorm has a branch for gloo (``dist.all_gather`` of its per-rank statistics instead of
``all_gather_into_tensor``), and gloo's all_gather and all_reduce take CUDA tensors (staged
through host memory). On CPU tensors PyTorch refuses SyncBatchNorm in training under any process
group (``ValueError: SyncBatchNorm expected input tensor to be on GPU ...``): ``check_gpu.py``
refuses ``--parts syncbn`` on the CPU, and a two-rank CPU run of ``run_sync_bn`` reports that
message (tests/gpu/test_sync_bn_amp_checks.py checks both).
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "retinanet_r18_fpn_synth.yaml"
BATCH = (4, 3, 96, 128)
RTOL = 1e-3
MIN_HALF_GAP = 10 * RTOL  # the half-batch statistics must miss the whole batch's by this much somewhere


def backbone(norm: str, device: torch.device) -> torch.nn.Module:
    """The synth RetinaNet's ResNet-18 with ``norm``, seed 0, in training mode on ``device``."""
    from dettool.config import load_config
    from dettool.trainer.builder.backbones import build_backbone

    cfg = load_config(CONFIG, [f"model.backbone.norm={norm}"])
    torch.manual_seed(0)
    return build_backbone(cfg.model.backbone).to(device).train()


def images(device: torch.device) -> torch.Tensor:
    return torch.randn(*BATCH, generator=torch.Generator().manual_seed(1)).to(device)


def step(model: torch.nn.Module, batch: torch.Tensor) -> tuple[dict, dict]:
    """One forward and backward; returns the BN running statistics and the gradients (CPU copies)."""
    outs = model(batch)
    sum(o.pow(2).mean(dim=(1, 2, 3)).sum() for o in (outs.values() if isinstance(outs, dict) else outs)).backward()
    stats = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
             if k.endswith(("running_mean", "running_var"))}
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return stats, grads


def worker(device_name: str, out: Path) -> None:
    """One rank of the torchrun job (gloo); rank 0 writes ``out`` (torch.save of the results)."""
    import torch.distributed as dist

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(device_name)
    batch = images(device)
    half = batch.chunk(world)[rank]
    result: dict = {"backend": dist.get_backend(), "world_size": world, "device": str(device)}
    try:
        stats, grads = step(backbone("syncbn", device), half)
        for g in grads.values():
            dist.all_reduce(g)
        gathered: list = [None] * world
        dist.all_gather_object(gathered, stats)
        result.update(sync_stats=gathered, sync_grads={k: g.cpu() for k, g in grads.items()})
    except Exception as error:  # noqa: BLE001 - reported in the row (PyTorch's refusal on CPU tensors)
        result["error"] = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    if rank == 0:
        if "error" not in result:
            whole_stats, whole_grads = step(backbone("bn", device), batch)
            result.update(whole_stats=whole_stats, whole_grads={k: g.cpu() for k, g in whole_grads.items()},
                          half_stats=step(backbone("bn", device), half)[0])
        torch.save(result, out)
    dist.destroy_process_group()


def max_rel_diff(got: dict, ref: dict) -> tuple[float, str]:
    """Largest ``max |got - ref| / max(1e-12, max |ref|)`` over the tensors, and its name."""
    assert got.keys() == ref.keys(), f"different tensors: {sorted(got.keys() ^ ref.keys())[:3]}"
    diffs = {k: float((got[k] - ref[k]).abs().max() / ref[k].abs().max().clamp(min=1e-12)) for k in ref}
    name = max(diffs, key=diffs.get)
    return diffs[name], name


def compare_sync_bn(result: dict) -> tuple[str, dict]:
    """The row's detail and values; AssertionError when SyncBN did not equal whole-batch BN."""
    if "error" in result:
        raise AssertionError(f"{result['backend']} on {result['device']}: {result['error']}")
    values = {"backend": result["backend"], "device": result["device"], "num_bn": len(result["whole_stats"]) // 2}
    for rank, stats in enumerate(result["sync_stats"]):
        values[f"stats_rank{rank}"] = max_rel_diff(stats, result["whole_stats"])
    values["grads"] = max_rel_diff(result["sync_grads"], result["whole_grads"])
    values["half_batch_stats"] = max_rel_diff(result["half_stats"], result["whole_stats"])
    stats = max(values[f"stats_rank{r}"][0] for r in range(len(result["sync_stats"])))
    detail = (f"{values['num_bn']} BN layers, {result['world_size']} ranks on {result['device']} "
              f"({result['backend']}): statistics within {stats:.2g}, "
              f"summed gradients within {values['grads'][0]:.2g} of plain BN on the whole batch (relative; "
              f"one rank's half alone: {values['half_batch_stats'][0]:.2g})")
    for key in [f"stats_rank{r}" for r in range(len(result["sync_stats"]))] + ["grads"]:
        assert values[key][0] <= RTOL, f"{key} differ at {values[key][1]}: {detail}"
    assert values["half_batch_stats"][0] >= MIN_HALF_GAP, f"the halves do not differ enough to tell: {detail}"
    return detail, values


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sync_bn(device: torch.device, out: Path, timeout: float = 300) -> dict:
    """Launch the two-rank job on ``device`` (both ranks on it); returns rank 0's result."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(Path(__file__)), "--device", str(device), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if not out.is_file():
        raise RuntimeError(f"torchrun exited {proc.returncode} without a result: {proc.stderr.strip()[-600:]}")
    return torch.load(out, weights_only=True)


def sync_bn_checks(checker, device: torch.device, root: Path) -> None:
    """Row ``syncbn 2 ranks on one device == bn on the whole batch``."""
    checker.run(f"syncbn 2 ranks on {device} (gloo) == bn on the whole batch",
                lambda: compare_sync_bn(run_sync_bn(device, root / "sync_bn.pt")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one rank of the SyncBN check (launched by torchrun)")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    worker(args.device, args.out)
