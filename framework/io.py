"""Atomic writing of results: tables, JSON, arrays and image grids.

Every file is written next to its destination and moved into place with os.replace,
so a crash never leaves a half-written result behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_torch_save(path: str | Path, obj) -> Path:
    """torch.save of `obj` into `path`, atomically (caches of tensors and weights)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=float) + "\n")


def write_table(rows: Sequence[dict], csv_path: str | Path, md_path: str | Path | None = None) -> None:
    """Write rows (dicts with the same keys) as CSV, and as a markdown table if md_path is given."""
    if not rows:
        raise ValueError("no rows to write")
    keys = list(rows[0].keys())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(csv_path, buf.getvalue())
    if md_path is not None:
        atomic_write_text(md_path, markdown_table(rows))


def markdown_table(rows: Sequence[dict]) -> str:
    keys = list(rows[0].keys())

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> torch.Tensor:
    """Tile images [N, C, H, W] in [-1, 1] into one [H', W', C] uint8 array."""
    images = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    n, c, h, w = images.shape
    nrow = nrow or max(1, int(n**0.5 + 0.5))
    ncol = (n + nrow - 1) // nrow
    grid = torch.full((c, ncol * (h + pad) + pad, nrow * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = images[i]
    return grid.permute(1, 2, 0)


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 4) -> Path:
    """Save images [N, C, H, W] in [-1, 1] as one PNG grid, each pixel enlarged `scale` times."""
    from PIL import Image

    grid = image_grid(images, nrow)
    grid = grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()
    mode = "L" if grid.shape[-1] == 1 else "RGB"
    img = Image.fromarray(grid[..., 0] if mode == "L" else grid, mode=mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
