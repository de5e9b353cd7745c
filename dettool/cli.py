"""The ``dettool`` command line: a thin layer over functions the tests call directly."""
from __future__ import annotations

import sys

import click

from dettool.errors import DettoolError


def _one_line(exc: BaseException) -> str:
    """A DataLoader worker re-raises with the worker traceback inside; keep the user's line."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split("\n"))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("dettool: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DettoolError as exc:
        click.echo(f"dettool: error: {_one_line(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("dettool: interrupted", err=True)
        sys.exit(130)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dettool")
def cli() -> None:
    """Train MMDetection-style detectors and carry them to verified deployment."""


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--work-dir", help="Where checkpoints and logs go (default: config's work_dir).")
@click.option("--resume", "resume", is_flag=False, flag_value="auto", default=None,
              help="Resume: alone, from the newest checkpoint in the work dir; or from CKPT.", metavar="[CKPT]")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
def train(config: str, work_dir: str | None, resume: str | None, overrides: tuple[str, ...],
          device: str | None) -> None:
    """Train the detector described by CONFIG."""
    from dettool.config import load_config
    from dettool.trainer.train import train as run_train

    sets = list(overrides) + ([f"work_dir={work_dir}"] if work_dir else [])
    run_train(load_config(config, sets), resume=resume, device=device)


@cli.command(name="eval")
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="Write metrics JSON here (plus .md table, PR curves).")
@click.option("--show-dir", type=click.Path(file_okay=False), help="Draw detections on val images into this folder.")
@click.option("--batch-size", default=2, show_default=True, type=click.IntRange(1), help="Images per forward pass.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
def evaluate(config: str, checkpoint: str, out: str | None, show_dir: str | None, batch_size: int,
             overrides: tuple[str, ...], device: str | None) -> None:
    """COCO bbox metrics of CHECKPOINT on the config's val split."""
    from dettool.config import load_config
    from dettool.trainer.evaluate import evaluate_checkpoint

    evaluate_checkpoint(load_config(config, overrides), checkpoint, out=out, show_dir=show_dir, device=device,
                        batch_size=batch_size)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--split", type=click.Choice(["train", "val"]), default="val", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Proposals file to write (.pt).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
def proposals(config: str, checkpoint: str, split: str, out: str, overrides: tuple[str, ...],
              device: str | None) -> None:
    """Write a trained RPN's proposals for a split (input of Fast R-CNN's data.*.proposals_file)."""
    from dettool.config import load_config
    from dettool.trainer.proposals import write_proposals

    write_proposals(load_config(config, overrides), checkpoint, split, out, device=device)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--to", "target", required=True, type=click.Choice(["onnx", "tensorrt"]), help="What to write.")
@click.option("--fp16", is_flag=True, help="FP16 graph (FP32 kept where precision needs it) / FP16 engine.")
@click.option("--portable", is_flag=True, help="Standard ONNX ops only (no dettool custom ops).")
@click.option("--dynamic-batch", is_flag=True, help="Batch size chosen at run time (else fixed at --batch-size).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1), help="Batch of the traced graph.")
@click.option("--out", type=click.Path(), help="File to write (default: <work_dir>/deploy/<config stem>...).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
def export(config: str, checkpoint: str, target: str, fp16: bool, portable: bool, dynamic_batch: bool,
           batch_size: int, out: str | None, overrides: tuple[str, ...]) -> None:
    """Export CHECKPOINT to an ONNX deploy graph or a TensorRT engine (with deploy metadata)."""
    from dettool.config import load_config
    from dettool.exporters.export import export_deploy

    export_deploy(load_config(config, overrides), checkpoint, target, out, fp16=fp16, portable=portable,
                  dynamic_batch=dynamic_batch, batch=batch_size, log=click.echo)


@cli.command(name="eval-engine")
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--engine", required=True, type=click.Path(), help="Exported file: .onnx, or a dettool TensorRT engine.")
@click.option("--backend", default="onnxruntime", show_default=True, type=click.Choice(["onnxruntime", "tensorrt"]))
@click.option("--out", type=click.Path(dir_okay=False), help="Report JSON (default: <engine>.eval.json; .md beside).")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1), help="Batch N (accuracy, latency).")
@click.option("--max-images", type=click.IntRange(1), help="Use the first M val images only.")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0), help="Untimed calls before timing.")
@click.option("--iters", default=10, show_default=True, type=click.IntRange(0), help="Timed calls (0: no latency).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default: cuda when available.")
@click.option("--fp32-tol", default=0.001, show_default=True, type=float, help="Max |delta bbox AP|, FP32 engine.")
@click.option("--fp16-tol", default=0.003, show_default=True, type=float, help="Max |delta bbox AP|, FP16 engine.")
@click.option("--mask-tol", default=0.003, show_default=True, type=float, help="Max |delta segm AP|.")
@click.option("--bootstrap", default=500, show_default=True, type=click.IntRange(0),
              help="Resamples of the 95% interval of delta AP (0: none, the point estimate decides).")
@click.option("--show-dir", type=click.Path(file_okay=False),
              help="Draw engine detections here (default: beside --out).")
@click.option("--num-show", default=8, show_default=True, type=click.IntRange(0), help="Images to draw (0: none).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
def eval_engine(config: str, checkpoint: str, engine: str, backend: str, out: str | None, batch_size: int,
                max_images: int | None, warmup: int, iters: int, device: str | None, fp32_tol: float, fp16_tol: float,
                mask_tol: float, bootstrap: int, show_dir: str | None, num_show: int,
                overrides: tuple[str, ...]) -> None:
    """Compare ENGINE with the PyTorch model (CONFIG + CHECKPOINT) on the val split: same detections
    (matched boxes and scores), same AP (with a bootstrap interval over the images), latency.
    Exit status 2 when the verdict fails (an AP difference the images resolve, or different
    detections where they cannot resolve the AP)."""
    from dettool.config import load_config
    from dettool.runtime.eval_engine import Tolerances, evaluate_engine

    report = evaluate_engine(load_config(config, overrides), checkpoint, engine, backend=backend, out=out,
                             batch_size=batch_size, max_images=max_images, warmup=warmup, iters=iters, device=device,
                             tolerances=Tolerances(fp32_tol, fp16_tol, mask_tol), bootstrap=bootstrap,
                             show_dir=show_dir, num_show=num_show)
    if not report["passed"]:
        click.echo(f"dettool: parity check failed: {'; '.join(report['failures'])}", err=True)
        sys.exit(2)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--config", type=click.Path(dir_okay=False), help="The checkpoint's config (MODEL a .pth only).")
@click.option("--out", default="infer_out", show_default=True, type=click.Path(file_okay=False),
              help="Folder for results.json, images.json, summary.json/.md and vis/.")
@click.option("--score-thr", type=click.FloatRange(0, 1), help="Keep detections scoring at least T "
              "(default: all the model returns, above its test.score_thr).", metavar="T")
@click.option("--draw-thr", default=0.3, show_default=True, type=click.FloatRange(0, 1),
              help="Lowest score drawn on the pictures.")
@click.option("--no-draw", is_flag=True, help="Write no pictures.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1), help="Images per model call.")
@click.option("--device", default=None, help="cpu or cuda[:N] (default: cuda when available).")
@click.option("--threads", type=click.IntRange(1), help="CPU threads (default: torch's).")
@click.option("--ann-file", type=click.Path(dir_okay=False),
              help="COCO annotations of the images: take their ids and evaluate the results against them.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override (checkpoint only).")
def infer(model: str, inputs: tuple[str, ...], config: str | None, out: str, score_thr: float | None,
          draw_thr: float, no_draw: bool, batch_size: int, device: str | None, threads: int | None,
          ann_file: str | None, overrides: tuple[str, ...]) -> None:
    """Detect objects in INPUT... (image files, folders, glob patterns) with MODEL: an .onnx deploy
    graph, a dettool TensorRT engine, or a checkpoint with --config. Writes COCO-format results
    and the images with their detections drawn; an unreadable image is warned about and skipped."""
    from dettool.runtime.detector import Detector
    from dettool.runtime.infer import run_infer

    if overrides and config is None:
        raise click.UsageError("--set applies to a checkpoint's --config only")
    detector = Detector.load(model, config, device=device, threads=threads, overrides=overrides)
    run_infer(detector, inputs, out, batch_size=batch_size, score_thr=score_thr, draw_thr=draw_thr,
              draw=not no_draw, ann_file=ann_file)


@cli.command()
@click.option("--work-dir", default="work_dirs/quickstart", show_default=True, type=click.Path(file_okay=False))
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1), help="Training epochs.")
@click.option("--config", type=click.Path(dir_okay=False), help="Detector config (default: RetinaNet R-18 synth).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
def quickstart(work_dir: str, epochs: int, config: str | None, device: str | None) -> None:
    """Synthetic data, a short training, ONNX export and eval-engine (ONNX Runtime, and TensorRT
    where present), then where the reports are. About 12 minutes on 2 CPU cores."""
    from dettool.quickstart import run_quickstart

    result = run_quickstart(work_dir, epochs, config, device)
    if not all(r["passed"] for r in result["reports"].values()):
        sys.exit(2)


@cli.group()
def data() -> None:
    """Dataset utilities."""


@data.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--num-train", default=1000, show_default=True, type=click.IntRange(0))
@click.option("--num-val", default=200, show_default=True, type=click.IntRange(0))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--semantic", is_flag=True,
              help="Also write each image's semantic label map (OUT/stuffthingmaps/<split>/, for HTC).")
def synth(out: str, num_train: int, num_val: int, seed: int, semantic: bool) -> None:
    """Write a deterministic synthetic COCO dataset to OUT."""
    from pathlib import Path

    from dettool.data.synth import generate, write_semantic_maps

    paths = generate(out, num_train, num_val, seed)
    click.echo(f"dettool: wrote {num_train} train and {num_val} val images; annotations: "
               f"{paths['train']} and {paths['val']}")
    if semantic:
        folders = [write_semantic_maps(Path(out), split, n, seed) for split, n in (("train", num_train),
                                                                                     ("val", num_val))]
        click.echo(f"dettool: wrote their semantic label maps into {folders[0]} and {folders[1]}")


@cli.group()
def convert() -> None:
    """Bring a detector trained elsewhere into dettool (config + checkpoint)."""


@convert.command(name="mmdet")
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for <name>.yaml and <name>.pth.")
@click.option("--trust-config", is_flag=True,
              help="Read CONFIG with mmengine, which EXECUTES it as Python (default: read as literals, never run).")
def convert_mmdet(config: str, checkpoint: str, out: str, trust_config: bool) -> None:
    """An MMDetection CONFIG and CHECKPOINT as a dettool config and checkpoint.

    The checkpoint is read with weights_only; an architecture or option dettool does not
    implement is refused naming it.
    """
    from dettool.interop.convert import convert_mmdet as run

    run(config, checkpoint, out, trust_config=trust_config, log=click.echo)


@convert.command(name="torchvision")
@click.argument("name")
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for <name>.yaml and <name>.pth.")
@click.option("--ann-file", default="data/coco/annotations/instances_val2017.json", show_default=True,
              help="COCO annotations the converted config evaluates on.")
@click.option("--img-dir", default="data/coco/val2017", show_default=True, help="Their images.")
def convert_torchvision(name: str, weights: str, out: str, ann_file: str, img_dir: str) -> None:
    """torchvision's detection model NAME with its WEIGHTS (a state dict) as a dettool config and
    checkpoint: retinanet_resnet50_fpn(_v2), fcos_resnet50_fpn, fasterrcnn_resnet50_fpn(_v2),
    maskrcnn_resnet50_fpn(_v2), with torchvision's 91-id COCO label map and test-time settings.
    """
    from dettool.interop.convert import convert_torchvision as run

    run(name, weights, out, ann_file=ann_file, img_dir=img_dir, log=click.echo)
