"""The pass/fail table of the GPU checks: one row per named check, printed and written as JSON + Markdown.

A check is a function returning its detail line (or ``(detail, values)``, ``values`` a dict of
numbers kept in the JSON); raising counts as a failure whose message becomes the detail.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch


@dataclass
class Result:
    part: str
    name: str
    ok: bool
    detail: str
    ms: float
    values: dict = field(default_factory=dict)


class Checker:
    """Runs named checks, records a row each; a check raising counts as a failure.

    Attributes:
        part: the part the next rows belong to (``kernels``, ``deploy``, ``train``).
    """

    def __init__(self, part: str = "") -> None:
        self.part = part
        self.results: list[Result] = []

    def run(self, name: str, fn: Callable[[], str | tuple[str, dict] | None]) -> None:
        start = time.perf_counter()
        values: dict = {}
        try:
            out = fn() or ""
            detail, values = out if isinstance(out, tuple) else (out, {})
            ok = True
        except Exception as e:  # noqa: BLE001 - every failure becomes a row of the table
            ok, detail = False, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:600]}"
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()
        self.results.append(Result(self.part, name, ok, detail, 1e3 * (time.perf_counter() - start), values))
        print(f"  {'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def summary(self) -> str:
        failed = sum(not r.ok for r in self.results)
        return f"{len(self.results) - failed} passed, {failed} failed"

    def table(self) -> str:
        width = max([len(r.name) for r in self.results] + [5])
        lines = [f"{'part':<8}  {'check':<{width}}  result  time(ms)  detail", "-" * (width + 50)]
        for r in self.results:
            lines.append(f"{r.part:<8}  {r.name:<{width}}  {'pass' if r.ok else 'FAIL':<6}  {r.ms:8.1f}  {r.detail}")
        lines.append(self.summary())
        return "\n".join(lines)

    def markdown(self, title: str, header: list[str]) -> str:
        lines = [f"# {title}", "", *header, "", "| part | check | result | time (ms) | detail |",
                 "|---|---|---|---:|---|"]
        for r in self.results:
            detail = r.detail.replace("|", "\\|")
            lines.append(f"| {r.part} | {r.name} | {'pass' if r.ok else '**FAIL**'} | {r.ms:.1f} | {detail} |")
        lines += ["", self.summary(), ""]
        return "\n".join(lines)

    def write(self, out_dir: Path, stem: str, title: str, header: list[str], meta: dict) -> list[Path]:
        """``out_dir/stem.json`` (meta, every row with its values, ``ok``) and ``out_dir/stem.md``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        doc = {"meta": meta, "ok": self.ok, "summary": self.summary(), "results": [asdict(r) for r in self.results]}
        paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
        paths[0].write_text(json.dumps(doc, indent=1, default=str) + "\n")
        paths[1].write_text(self.markdown(title, header))
        return paths
