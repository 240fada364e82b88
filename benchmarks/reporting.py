"""Tables and plots for the benchmarks: NFE pivots in markdown, long-format CSV, log-log error plots."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from framework.io import atomic_write_bytes, atomic_write_text, markdown_table, write_json, write_table

SOURCES = ("ours", "diffusers", "ours@diffusers-grid")


def print_section(title: str) -> None:
    print(f"\n## {title}\n")


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else "-"


def pivot(rows: Sequence[dict], problem: str, metric: str, nfes: Sequence[int]) -> str:
    """A markdown table, one line per (source, solver), one column per NFE; '-' cells explained below it."""
    keys, cells, why = [], {}, {}
    for r in rows:
        if r["problem"] != problem:
            continue
        key = (r["source"], r["solver"])
        if key not in cells:
            keys.append(key)
            cells[key] = {}
        cells[key][r["nfe"]] = r[metric]
        if r[metric] == "" and r["note"]:
            why.setdefault(key, []).append((r["nfe"], r["note"]))
    keys.sort(key=lambda k: SOURCES.index(k[0]) if k[0] in SOURCES else len(SOURCES))
    lines = ["| source | solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|---|" + "---|" * len(nfes)]
    lines += [f"| {s} | {v} | " + " | ".join(_fmt(cells[(s, v)].get(n, "")) for n in nfes) + " |" for s, v in keys]
    notes = [f"- {s} {v}, NFE {', '.join(str(n) for n, _ in items)}: {items[0][1]}" for (s, v), items in why.items()]
    return "\n".join(lines) + "\n" + ("\n'-' means:\n" + "\n".join(notes) + "\n" if notes else "")


def write_results(out: Path, rows, comparison, info, nfes, plot: bool = True) -> None:
    """results.csv (long format), comparison.csv/.md, tables.md (pivots), info.json, error_<problem>.png."""
    out = Path(out)
    write_table(rows, out / "results.csv")
    if comparison:
        write_table(comparison, out / "comparison.csv", out / "comparison.md")
    write_json(out / "info.json", info)
    atomic_write_text(out / "tables.md", tables_markdown(rows, info, nfes, comparison))
    if plot:
        for problem in info["floors"]:
            plot_errors(rows, problem, out / f"error_{problem.replace('-', '').lower()}.png")


def tables_markdown(rows, info, nfes, comparison) -> str:
    parts = []
    for problem, fl in info["floors"].items():
        parts.append(f"## {problem} mixture\n\nEnergy distance floors: Monte Carlo (fresh true draws of the run's "
                     f"size) {fl['mc_floor']:.3g} +- {fl['mc_floor_sd']:.2g} (sd); exact ODE solution "
                     f"{fl['exact_ode']:.3g}.\n")
        for metric, title in (("error", "mean distance to the exact ODE solution"), ("energy", "energy distance to true draws")):
            parts.append(f"### {problem}: {title}\n\n" + pivot(rows, problem, metric, nfes))
    if comparison:
        parts.append("## ours / diffusers error ratios\n\n" + markdown_table(comparison))
    if info.get("skipped"):
        parts.append("## skipped variants\n\n" + "\n".join(f"- {s}" for s in info["skipped"]) + "\n")
    return "\n".join(parts)


def plot_errors(rows, problem: str, path: Path) -> None:
    """Error vs NFE, log-log, one line per solver; left: ours on default grids; right: diffusers (dashed)
    and ours on diffusers' grid (dotted, same colour as the diffusers scheduler it copies)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict = {}
    for r in rows:
        if r["problem"] == problem and isinstance(r["error"], float) and r["error"] > 0:
            series.setdefault((r["source"], r["solver"]), []).append((r["nfe"], r["error"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 7.5), sharey=True)
    colours = plt.get_cmap("tab20").colors
    ours = [k for k in series if k[0] == "ours"]
    theirs = [k for k in series if k[0] == "diffusers"]
    for i, key in enumerate(ours):
        _line(left, series[key], "-", colours[i % 20], ["o", "s", "^", "v", "D"][i // 20 % 5], key[1])
    for i, key in enumerate(theirs):
        _line(right, series[key], "--", colours[i % 20], "o", f"diffusers: {key[1]}")
        same_grid = [k for k in series if k[0] == "ours@diffusers-grid" and k[1].endswith(f"@ {key[1]} grid")]
        for k in same_grid:
            _line(right, series[k], ":", colours[i % 20], "x", f"ours: {k[1]}")
    for ax, title in ((left, "ours, default grids"), (right, "diffusers (dashed), ours on diffusers' grid (dotted)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sorted({n for pts in series.values() for n, _ in pts}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("NFE")
        ax.set_title(f"{problem} mixture: {title}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.09))
    left.set_ylabel("mean distance to the exact ODE solution")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _line(ax, pts, style: str, colour, marker: str, label: str) -> None:
    pts = sorted(pts)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour, marker=marker, ms=3.5, lw=1.2, label=label)
