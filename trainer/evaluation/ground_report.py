# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The proving ground's statistics and outputs: mean ± std over seeds, the claims each table checks, its Markdown
and bar chart."""

import math
from pathlib import Path

import numpy as np

from .ground_tables import ARMS, COLUMNS, EXTRA_COLUMNS, PAPER_COLUMNS, SPATIAL_COLUMNS, Table


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarise(measurements: dict[str, list[dict]]) -> dict[str, dict]:
    """Per arm, per column: mean, std and the per-seed values."""
    keys = [key for key, _, _ in COLUMNS + EXTRA_COLUMNS + SPATIAL_COLUMNS]
    out = {}
    for arm, rows in measurements.items():
        out[arm] = {}
        for key in keys:
            values = [row[key] for row in rows if key in row and math.isfinite(row[key])]
            if values:
                mean, std = spread(values)
                out[arm][key] = {"mean": mean, "std": std, "values": values}
    return out


def _higher(key: str) -> bool:
    return {k: h for k, _, h in COLUMNS + EXTRA_COLUMNS + SPATIAL_COLUMNS}[key]


def compare(summary: dict, arm: str, other: str, key: str) -> tuple[bool, bool]:
    """(is `arm` better than `other` on `key` by the means, do their mean ± std intervals not overlap)."""
    a, b = summary[arm][key], summary[other][key]
    better = a["mean"] > b["mean"] if _higher(key) else a["mean"] < b["mean"]
    separated = (a["mean"] - a["std"] > b["mean"] + b["std"]) or (a["mean"] + a["std"] < b["mean"] - b["std"])
    return better, separated


def check_claims(table: Table, summary: dict) -> list[dict]:
    """Each claim of `table`: whether the means show it (`holds`), whether every comparison it makes has its arms'
    mean ± std intervals apart (`separated`), whether some comparison goes against it with the intervals apart
    (`contradicted`), and a `verdict` saying so."""
    results = []
    for claim_id, text, kind, params in table.claims:
        comparisons = []  # (holds, separated)
        if kind == "worst":
            arm, keys = params
            for key in keys:
                for other in table.arms:
                    if other != arm and key in summary.get(other, {}):
                        better, separated = compare(summary, other, arm, key)
                        comparisons.append((better, separated))
        elif kind == "not_better":
            arm, other, keys = params
            for key in keys:
                better, separated = compare(summary, arm, other, key)
                comparisons.append((not better, separated))
        elif kind in ("better", "at_least"):
            arm, other, key = params
            better, separated = compare(summary, arm, other, key)
            equal = summary[arm][key]["mean"] == summary[other][key]["mean"]
            comparisons.append((better or (kind == "at_least" and equal), separated))
        elif kind == "all_better":
            arms, other, keys = params
            for arm in arms:
                for key in keys:
                    comparisons.append(compare(summary, arm, other, key))
        elif kind == "best":
            arm, others, key = params
            for other in others:
                comparisons.append(compare(summary, arm, other, key))
        else:
            raise ValueError(f"claim {claim_id}: unknown kind {kind!r}.")
        holds = all(h for h, _ in comparisons)
        separated = all(s for _, s in comparisons)  # every comparison's mean ± std intervals apart
        contradicted = any(s and not h for h, s in comparisons)  # some comparison goes the other way, apart
        if holds:
            verdict = "holds, the seeds separate" if separated else "holds by the means, within the seeds' spread"
        else:
            verdict = ("does not hold: contradicted beyond the seeds' spread" if contradicted
                       else "does not hold, within the seeds' spread")
        results.append({"claim": claim_id, "text": text, "holds": holds, "separated": separated,
                        "contradicted": contradicted, "verdict": verdict})
    return results


def _cell(stats: dict | None) -> str:
    return "—" if stats is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def markdown_table(table: Table, summary: dict, claims: list[dict], seeds: list[int]) -> str:
    measured = [column for column in EXTRA_COLUMNS if any(column[0] in summary.get(arm, {}) for arm in table.arms)]
    columns = COLUMNS + tuple(measured)
    labels = [label for _, label, _ in columns]
    lines = [f"### {table.title} (mean ± std over seeds {seeds})", "",
             "| arm | " + " | ".join(labels) + " | paper: " + " / ".join(PAPER_COLUMNS) + " |",
             "|---|" + "---|" * (len(labels) + 1)]
    for name in table.arms:
        row = summary.get(name, {})
        cells = [_cell(row.get(key)) for key, _, _ in columns]
        paper = table.paper.get(name)
        paper_cell = " / ".join(f"{v:g}" for v in paper) if paper else "—"
        lines.append(f"| {ARMS[name].label} | " + " | ".join(cells) + f" | {paper_cell} |")
    lines.append("")
    for claim in claims:
        lines.append(f"- ({claim['claim']}) {claim['text']}: **{claim['verdict']}**")
    return "\n".join(lines) + "\n"


def spatial_markdown(table: Table, summary: dict, claims: list[dict], seeds: list[int], floors: dict) -> str:
    """An MLLM table (VisPer-LM's): spatial QA accuracy overall and per kind, the majority-answer floor below."""
    labels = [label for _, label, _ in SPATIAL_COLUMNS]
    lines = [f"### {table.title} (mean ± std over seeds {seeds})", "",
             "| MLLM | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name in table.arms:
        row = summary.get(name, {})
        lines.append(f"| {ARMS[name].label} | " + " | ".join(_cell(row.get(key)) for key, _, _ in SPATIAL_COLUMNS)
                     + " |")
    lines.append("| majority answer per kind (floor) | " + " | ".join(
        f"{floors[key]:.3f}" if key in floors else "—" for key, _, _ in SPATIAL_COLUMNS) + " |")
    lines.append("")
    for claim in claims:
        lines.append(f"- ({claim['claim']}) {claim['text']}: **{claim['verdict']}**")
    return "\n".join(lines) + "\n"


def bar_chart(path: Path, table: Table, summary: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4.2 * len(COLUMNS), 3.6))
    names = [name for name in table.arms if name in summary]
    for axis, (key, label, _) in zip(axes, COLUMNS):
        present = [name for name in names if key in summary[name]]
        means = [summary[name][key]["mean"] for name in present]
        stds = [summary[name][key]["std"] for name in present]
        axis.bar(range(len(present)), means, yerr=stds, capsize=4, color=plt.cm.tab10(np.arange(len(present))))
        axis.set_xticks(range(len(present)), [name for name in present], rotation=30, ha="right", fontsize=8)
        axis.set_title(label, fontsize=10)
    fig.suptitle(table.title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = ["bar_chart", "check_claims", "compare", "markdown_table", "spatial_markdown", "spread", "summarise"]
