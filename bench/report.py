"""bench/run.py's output: the machine it ran on, and each figure as gateway, reference, ratio, target, met."""

from __future__ import annotations

import math
import os
import platform
import re
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One figure: the gateway's, the reference's, their ratio, and the target it is held to.

    ``target`` is ``(kind, bound)``: ``"ratio>="`` or ``"ratio<="`` hold the ratio to ``bound``, ``"value<="`` and
    ``"value<"`` the gateway's own figure (memory in KiB, latency in ms, counts); ``None``: shown, not judged.
    """

    figure: str
    gateway: float
    reference: float
    reference_name: str
    target: tuple[str, float] | None = None

    @property
    def ratio(self) -> float:
        return self.gateway / self.reference if self.reference else math.nan

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        kind, bound = self.target
        value = self.ratio if kind.startswith("ratio") else self.gateway
        if kind.endswith(">="):
            return value >= bound
        if kind.endswith("<="):
            return value <= bound
        return value < bound

    def target_text(self) -> str:
        if self.target is None:
            return ""
        kind, bound = self.target
        subject, operator = ("ratio", kind[5:]) if kind.startswith("ratio") else ("value", kind[5:])
        return f"{operator} {bound:g}x" if subject == "ratio" else f"{operator} {bound:g}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def number(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| figure | gateway | reference | ratio | target | met? |", "|---|---:|---:|---:|---|---|"]
    for row in rows:
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        reference = f"{number(row.reference)} ({row.reference_name})"
        lines.append(
            f"| {row.figure} | {number(row.gateway)} | {reference} | {ratio(row.ratio)} | {row.target_text()} | {met} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, str]:
    """What the figures were measured on: they hold only for this kind of machine."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1] for line in cpuinfo.splitlines() if line.startswith("model name")]
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    return {
        "cpu": re.sub(r"\s+", " ", models[0]).strip() if models else platform.processor() or "?",
        "cores": str(os.cpu_count()),
        "ram": f"{int(total.group(1)) / 1024 / 1024:.1f} GiB" if total else "?",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "django": version("django"),
        "daphne": version("daphne"),
        "mcp": version("mcp"),
    }


def machine_text(description: dict[str, str]) -> str:
    d = description
    return (
        f"{d['cpu']}, {d['cores']} cores, {d['ram']} RAM; {d['kernel']}; Python {d['python']}, Django {d['django']}, "
        f"daphne {d['daphne']}, mcp {d['mcp']}"
    )
