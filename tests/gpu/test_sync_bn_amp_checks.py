"""The ``syncbn`` and ``amp`` parts of tests/gpu/check_gpu.py: what of them runs without a GPU.

On the CPU: the SyncBN comparison on real whole-batch / half-batch BN statistics, the torchrun
launch ending in PyTorch's refusal of CPU tensors (reported in the row), check_gpu refusing the
part on the CPU, and dettool's trainer under ``train.amp=fp16`` running as bf16. ``-m gpu`` on a
machine with CUDA runs both parts through check_gpu.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import check_gpu
import pytest
import torch
from amp_checks import amp_checks, amp_train, check_run, check_step, skipped_steps
from check_table import Checker
from sync_bn_checks import backbone, compare_sync_bn, images, run_sync_bn, step

CPU = torch.device("cpu")


def plain_bn_result() -> dict:
    """A result as the torchrun job writes it, its SyncBN side taken from plain BN on the whole batch."""
    batch = images(CPU)
    whole_stats, whole_grads = step(backbone("bn", CPU), batch)
    half_stats, _ = step(backbone("bn", CPU), batch[:2])
    return {"backend": "gloo", "world_size": 2, "device": "cpu", "sync_stats": [whole_stats, whole_stats],
            "sync_grads": whole_grads, "whole_stats": whole_stats, "whole_grads": whole_grads,
            "half_stats": half_stats}


def test_sync_bn_comparison_passes_on_whole_batch_statistics_and_fails_on_one_half():
    result = plain_bn_result()
    detail, values = compare_sync_bn(result)
    assert values["num_bn"] == 20 and values["stats_rank1"][0] == 0.0 and values["half_batch_stats"][0] > 0.1
    assert "20 BN layers, 2 ranks on cpu (gloo)" in detail
    result["sync_stats"] = [result["sync_stats"][0], result["half_stats"]]  # rank 1 not synchronised
    with pytest.raises(AssertionError, match="stats_rank1 differ at"):
        compare_sync_bn(result)
    result = plain_bn_result()
    result["sync_grads"] = {k: g * 1.01 for k, g in result["sync_grads"].items()}
    with pytest.raises(AssertionError, match="grads differ at"):
        compare_sync_bn(result)


def test_two_rank_cpu_run_reports_pytorch_refusing_cpu_tensors(tmp_path):
    result = run_sync_bn(CPU, tmp_path / "sync_bn.pt", timeout=120)
    assert (result["backend"], result["world_size"]) == ("gloo", 2)
    assert result["error"].startswith("ValueError: SyncBatchNorm expected input tensor to be on GPU")
    with pytest.raises(AssertionError, match="gloo on cpu: ValueError: SyncBatchNorm expected input tensor"):
        compare_sync_bn(result)


def test_check_gpu_refuses_cuda_only_parts_on_the_cpu(capsys):
    assert check_gpu.main(["--device", "cpu", "--parts", "deploy,syncbn,kernels"]) == 2
    assert "--parts kernels,syncbn needs --device cuda" in capsys.readouterr().err


def test_amp_step_on_the_cpu_runs_bf16_through_the_trainer(tmp_path):
    checker = Checker("amp")
    checker.run("step", lambda: check_step(amp_train(CPU, tmp_path, "step", 1, 5), CPU))
    row = checker.results[0]
    assert row.ok, row.detail
    assert row.values["autocast"] == "bfloat16" and row.values["conv_dtypes"] == ["torch.bfloat16"]
    assert row.values["scales"] == [None] and row.values["max_param_change"] > 0  # no scaler on the CPU


def test_amp_run_check_needs_a_falling_loss_and_few_skipped_steps():
    falling = {"losses": [2.0] * 5 + [1.8] * 20 + [1.5] * 5, "scales": [2.0**16] * 30, "autocast": "float16"}
    assert check_run(falling, torch.device("cuda"))[1]["ratio"] == pytest.approx(0.75)
    with pytest.raises(AssertionError, match="did not fall"):
        check_run({**falling, "losses": [2.0] * 30}, torch.device("cuda"))
    with pytest.raises(AssertionError, match="skipped more than 3"):
        check_run({**falling, "scales": [2.0**16] * 29 + [2.0**11]}, torch.device("cuda"))
    with pytest.raises(AssertionError, match="non-finite"):
        check_run({**falling, "losses": falling["losses"][:-1] + [float("nan")]}, torch.device("cuda"))
    assert skipped_steps([None]) == 0 and skipped_steps([2.0**16, 2.0**15]) == 1


@pytest.mark.slow
def test_amp_part_on_the_cpu_passes(tmp_path):
    checker = Checker("amp")
    amp_checks(checker, CPU, tmp_path)
    assert checker.ok, checker.table()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_syncbn_and_amp_parts_pass(tmp_path):
    script = Path(__file__).with_name("check_gpu.py")
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, str(script), "--quick", "--parts", "syncbn,amp", "--out", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "check_gpu.json").read_text())
    assert [r["part"] for r in report["results"]] == ["syncbn", "amp", "amp"]
    assert all(r["ok"] for r in report["results"])
