"""Kill-and-resume check: SIGKILL a training run mid-way, resume it, compare with an uninterrupted run.

Runs ``dettool train CFG`` twice into separate work dirs, side by side (or compares with a finished
``--reference`` run): A uninterrupted; B killed with SIGKILL ``--kill-delay`` seconds after the
checkpoint ``--kill-after`` is on disk (``epoch_N.pth``, or ``iter_N.pth`` written inside an epoch
with ``--set train.checkpoint_iter_interval=K``), so the kill lands mid-epoch, then resumed with
``--resume``. Prints both final bbox APs and their difference and writes ``OUT/kill_resume.json``.
Exit status 1 when |AP_A - AP_B| > ``--tol``.

    python tools/kill_resume.py configs/retinanet_r18_fpn_synth.yaml --out work_dirs/kill_resume --kill-after 4
    python tools/kill_resume.py configs/retinanet_r18_fpn_synth.yaml --out work_dirs/kill_resume_iter \
        --kill-after iter_560 --set train.checkpoint_iter_interval=80
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def dettool_cmd(cfg: str, work_dir: Path, sets: list[str], resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "dettool", "train", cfg, "--work-dir", str(work_dir)]
    for s in sets:
        cmd += ["--set", s]
    return cmd + (["--resume"] if resume else [])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--out", required=True, help="folder for the two work dirs and the JSON result")
    ap.add_argument("--kill-after", default="4",
                    help="kill B once this checkpoint exists: N for epoch_N.pth, or iter_N for iter_N.pth "
                         "(with --set train.checkpoint_iter_interval=K; the resume then starts mid-epoch)")
    ap.add_argument("--kill-delay", type=float, default=20.0, help="seconds to wait after that checkpoint (mid-epoch)")
    ap.add_argument("--tol", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=0,
                    help="OMP threads per run (0: inherit; use 1 when A and B share a 2-core machine)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--reference", help="work dir of a finished uninterrupted run of the same config and "
                    "settings to compare against, instead of running A beside B")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    a_dir = Path(args.reference) if args.reference else out / "uninterrupted"
    b_dir = out / "killed_resumed"
    t0 = time.time()
    logs = {name: open(out / f"{name}.log", "w") for name in ("a", "b1", "b2")}
    proc_a = None if args.reference else subprocess.Popen(dettool_cmd(args.config, a_dir, args.sets), env=env,
                                                          stdout=logs["a"], stderr=subprocess.STDOUT)
    proc_b = subprocess.Popen(dettool_cmd(args.config, b_dir, args.sets), env=env, stdout=logs["b1"],
                              stderr=subprocess.STDOUT)
    marker = b_dir / (f"{args.kill_after}.pth" if args.kill_after.startswith("iter_") else
                      f"epoch_{int(args.kill_after)}.pth")
    while not marker.exists():
        if proc_b.poll() is not None:
            print(f"run B ended before {marker} appeared (status {proc_b.returncode})", file=sys.stderr)
            return 2
        time.sleep(2)
    time.sleep(args.kill_delay)
    os.kill(proc_b.pid, signal.SIGKILL)
    proc_b.wait()
    killed_at = json.loads((b_dir / "log.jsonl").read_text().splitlines()[-1])
    print(f"killed run B with SIGKILL at {time.time() - t0:.0f} s (last log record: epoch {killed_at.get('epoch')}, "
          f"iter {killed_at.get('iter')}); resuming", flush=True)
    proc_b2 = subprocess.Popen(dettool_cmd(args.config, b_dir, args.sets, resume=True), env=env,
                               stdout=logs["b2"], stderr=subprocess.STDOUT)
    rc_a, rc_b = (proc_a.wait() if proc_a else 0), proc_b2.wait()
    if rc_a or rc_b:
        print(f"a run failed: uninterrupted {rc_a}, resumed {rc_b}; see {out}/*.log", file=sys.stderr)
        return 2
    ap_a = json.loads((a_dir / "metrics.json").read_text())["bbox_AP"]
    ap_b = json.loads((b_dir / "metrics.json").read_text())["bbox_AP"]
    result = {"config": args.config, "kill_after_epoch": args.kill_after, "killed_at_record": killed_at,
              "bbox_AP_uninterrupted": ap_a, "bbox_AP_killed_resumed": ap_b, "abs_diff": abs(ap_a - ap_b),
              "tol": args.tol, "minutes": round((time.time() - t0) / 60, 1)}
    (out / "kill_resume.json").write_text(json.dumps(result, indent=2))
    print(f"| run | bbox AP |\n|---|---|\n| uninterrupted | {ap_a:.4f} |\n| killed + resumed | {ap_b:.4f} |\n"
          f"|diff| = {abs(ap_a - ap_b):.4f} (tolerance {args.tol})")
    return 0 if abs(ap_a - ap_b) <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
