"""The files one evaluation leaves: a table (CSV, markdown, JSON with its provenance) and a quality-vs-NFE plot.

Everything is written atomically (framework.io); the JSON holds the same numbers as the
table plus what makes them comparable (n, reference set, feature network and its hash).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from ..io import atomic_write_bytes, atomic_write_text, markdown_table, write_json, write_table

TABLE = "table"
PLOT = "quality_vs_nfe.png"


def provenance_lines(info: dict) -> str:
    """The evaluation's provenance as markdown bullet lines (under the table)."""
    return "".join(f"- {k}: {v}\n" for k, v in info.items())


def write_results(rows: Sequence[dict], info: dict, out: Path, plot_metrics: Sequence[str]) -> dict[str, Path]:
    """Write table.csv, table.md, table.json and the quality-vs-NFE plot into `out`; return their paths."""
    out = Path(out)
    paths = {"csv": out / f"{TABLE}.csv", "md": out / f"{TABLE}.md", "json": out / f"{TABLE}.json", "plot": out / PLOT}
    write_table(rows, paths["csv"])
    atomic_write_text(paths["md"], markdown_table(rows) + "\n" + provenance_lines(info))
    write_json(paths["json"], {"info": info, "rows": list(rows)})
    plot_quality_vs_nfe(rows, plot_metrics, paths["plot"], title=f"n={info.get('num_samples')}")
    return paths


def plot_quality_vs_nfe(rows: Sequence[dict], metrics: Sequence[str], path: Path, title: str = "") -> Path:
    """One panel per metric, one line per sampler (x: NFE, log scale); Agg backend, no display needed."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, NullLocator, ScalarFormatter

    fig = Figure(figsize=(4.5 * len(metrics), 3.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    real = [r for r in rows if r["nfe"] == 0]  # the real-data row: a horizontal line, the floor
    rows = [r for r in rows if r["nfe"] > 0]
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    for ax, metric in zip(axes, metrics):
        for name in samplers:
            pts = sorted((r["nfe"], r[metric]) for r in rows if r["sampler"] == name and r[metric] is not None)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        for r in real:
            if r[metric] is not None:
                ax.axhline(r[metric], color="k", ls=":", label=f"{r['sampler']} (n={r['num_samples']})")
        ax.set_xscale("log")
        nfes = sorted({r["nfe"] for r in rows})
        ax.set_xticks(nfes, labels=[str(k) for k in nfes])
        ax.xaxis.set_minor_locator(NullLocator())
        if metric in ("fid", "ref_err") and all(r[metric] > 0 for r in rows if r[metric] is not None):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            # FID spans one decade: label the minor ticks too; ref_err spans several: major ticks only
            ax.yaxis.set_minor_formatter(ScalarFormatter() if metric == "fid" else NullFormatter())
        ax.set_xlabel("NFE")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return atomic_write_bytes(path, buf.getvalue())
