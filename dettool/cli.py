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
def train(config: str, work_dir: str | None, resume: str | None, overrides: tuple[str, ...], device: str | None) -> None:
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
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
def evaluate(config: str, checkpoint: str, out: str | None, show_dir: str | None, overrides: tuple[str, ...],
             device: str | None) -> None:
    """COCO bbox metrics of CHECKPOINT on the config's val split."""
    from dettool.config import load_config
    from dettool.trainer.evaluate import evaluate_checkpoint

    evaluate_checkpoint(load_config(config, overrides), checkpoint, out=out, show_dir=show_dir, device=device)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--split", type=click.Choice(["train", "val"]), default="val", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Proposals file to write (.pt).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
def proposals(config: str, checkpoint: str, split: str, out: str, overrides: tuple[str, ...], device: str | None) -> None:
    """Write a trained RPN's proposals for a split (input of Fast R-CNN's data.*.proposals_file)."""
    from dettool.config import load_config
    from dettool.trainer.proposals import write_proposals

    write_proposals(load_config(config, overrides), checkpoint, split, out, device=device)


@cli.group()
def data() -> None:
    """Dataset utilities."""


@data.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--num-train", default=1000, show_default=True, type=click.IntRange(0))
@click.option("--num-val", default=200, show_default=True, type=click.IntRange(0))
@click.option("--seed", default=0, show_default=True, type=int)
def synth(out: str, num_train: int, num_val: int, seed: int) -> None:
    """Write a deterministic synthetic COCO dataset to OUT."""
    from dettool.data.synth import generate

    paths = generate(out, num_train, num_val, seed)
    click.echo(f"dettool: wrote {num_train} train and {num_val} val images; annotations: "
               f"{paths['train']} and {paths['val']}")
