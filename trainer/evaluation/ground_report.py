# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The proving ground's statistics and outputs: mean ± std over seeds, the claims each table checks, its Markdown
and bar chart."""

import math
from pathlib import Path

import numpy as np

from .ground_tables import ARMS, COLUMNS, EXTRA_COLUMNS, INSTRUMENTS, PAPER_COLUMNS, SPATIAL_COLUMNS, Table


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
    return _versus(summary[arm][key], summary[other][key], _higher(key))


def check_instruments(summary: dict, floors: dict | None = None) -> dict[str, dict]:
    """Each of `INSTRUMENTS` judged by its controls: `passed` when its positive control's mean ± std interval is
    apart from, and better than, every negative control's (an arm's column, another column of an arm, or the
    majority-answer `floors[column]`, exact), over at least two seeds; `missing` names what was not measured (then
    it has not passed)."""
    results = {}
    for name, instrument in INSTRUMENTS.items():
        column, positive = instrument["column"], instrument["positive"]
        stats = summary.get(positive, {}).get(column)
        missing = [] if stats is not None else [f"{positive}.{column}"]
        negatives = {}
        for negative in instrument["negative"]:
            if negative == "floor":
                if (floors or {}).get(column) is None:
                    missing.append(f"floor.{column}")
                else:
                    negatives[f"majority floor ({column})"] = {"mean": floors[column], "std": 0.0}
                continue
            arm, key = negative if isinstance(negative, tuple) else (negative, column)
            if key in summary.get(arm, {}):
                negatives[f"{arm}.{key}"] = summary[arm][key]
            else:
                missing.append(f"{arm}.{key}")
        beats = {}
        for label, other in negatives.items():
            if stats is None:
                continue
            better, separated = _versus(stats, other, _higher(column))
            beats[label] = {"mean": other["mean"], "std": other["std"], "better": better, "separated": separated}
        # a spread needs two seeds: with one, no control can be told apart from another
        counted = [stats] if stats is not None else []
        counted += [other for other in negatives.values() if "values" in other]  # the floor is exact
        seeds = min((len(other["values"]) for other in counted), default=0)
        passed = not missing and seeds >= 2 and all(b["better"] and b["separated"] for b in beats.values())
        results[name] = {"column": column, "positive": positive, "positive_mean": stats and stats["mean"],
                         "positive_std": stats and stats["std"], "negatives": beats, "missing": missing,
                         "seeds": seeds, "passed": passed}
    return results


def _versus(a: dict, b: dict, higher: bool) -> tuple[bool, bool]:
    better = a["mean"] > b["mean"] if higher else a["mean"] < b["mean"]
    separated = (a["mean"] - a["std"] > b["mean"] + b["std"]) or (a["mean"] + a["std"] < b["mean"] - b["std"])
    return better, separated


def _claim_columns(kind: str, params: tuple) -> list[str]:
    keys = params[-1] if kind in ("worst", "not_better", "all_better") else (params[2],)
    return list(keys) if isinstance(keys, tuple) else [keys]


def check_claims(table: Table, summary: dict, instruments: dict | None = None) -> list[dict]:
    """Each claim of `table`: whether the means show it (`holds`), whether every comparison it makes has its arms'
    mean ± std intervals apart (`separated`), whether some comparison goes against it with the intervals apart
    (`contradicted`), and a `verdict` saying so. With `instruments` (`check_instruments`), a claim that reads a
    column whose instrument did not pass its controls gets the verdict "instrument failed its control" instead
    (`failed_instruments` names them)."""
    reads = {instrument["column"]: name for name, instrument in INSTRUMENTS.items()}
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
        failed = sorted({reads[key] for key in _claim_columns(kind, params) if key in reads
                         and instruments is not None and not instruments.get(reads[key], {}).get("passed")})
        if failed:
            verdict = f"instrument failed its control ({', '.join(failed)}): no verdict (the means: " + \
                      ("with the claim" if holds else "against it") + ")"
        results.append({"claim": claim_id, "text": text, "holds": holds, "separated": separated,
                        "contradicted": contradicted, "failed_instruments": failed, "verdict": verdict})
    return results


def _cell(stats: dict | None) -> str:
    return "—" if stats is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def instruments_markdown(instruments: dict) -> str:
    """The instruments' controls, one line each: positive control against each negative one, passed or failed."""
    lines = ["Instruments and their controls (positive control against each negative one, mean ± std):", ""]
    for name, result in instruments.items():
        if result["positive_mean"] is None:
            lines.append(f"- {name} ({result['column']}): **not measured** ({', '.join(result['missing'])})")
            continue
        against = "; ".join(f"{label} {b['mean']:.3f} ± {b['std']:.3f}" for label, b in result["negatives"].items())
        verdict = "passed" if result["passed"] else "FAILED" if result["seeds"] >= 2 else "not judged: one seed"
        missing = f" (not measured: {', '.join(result['missing'])})" if result["missing"] else ""
        lines.append(f"- {name} ({result['column']}): {result['positive']} {result['positive_mean']:.3f} ± "
                     f"{result['positive_std']:.3f} against {against}: **{verdict}**{missing}")
    return "\n".join(lines) + "\n"


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


__all__ = ["bar_chart", "check_claims", "check_instruments", "compare", "instruments_markdown", "markdown_table",
           "spatial_markdown", "spread", "summarise"]
