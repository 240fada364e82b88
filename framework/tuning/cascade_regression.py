"""Cascade polynomial regression (CPR, DC-Solver; official `cascade_polynomial_regression`): the compensation ratios of an unseen (NFE, guidance
scale) predicted from searched ones.

The ratio of step s of an NFE-step run at guidance scale w is a cubic in x = s / NFE whose coefficients are
quadratics in g = w / 12 whose coefficients are quadratics in n = NFE / 50 (the official normalisation; the
formula and the flat (k, a, b) order of its 36 coefficients: framework.samplers.dynamic_compensation). The
cascade is linear in its 36 coefficients, so `fit` is one linear least-squares problem over every searched
step of every record (minimum-norm where the records do not determine every coefficient, e.g. one guidance
scale only: the prediction at the scales seen is still the least-squares one). Steps s <= dc_order are
excluded: their ratio is 1 by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from ..io import write_json
from ..samplers.dynamic_compensation import (CPR_GUIDANCE_SCALE, CPR_NFE_SCALE, CPR_SHAPE, check_cpr_coefficients,
                                             cpr_document, cpr_ratios, read_cpr_file)

#: the fewest records (searched configurations) `fit` accepts
MIN_RECORDS = 2


@dataclass(frozen=True)
class Record:
    """One searched configuration: NFE (steps), guidance scale, and its ratio per step."""

    nfe: int
    guidance_scale: float
    ratios: tuple[float, ...]


def as_record(item: Any) -> Record:
    """A Record from a Record, a mapping {nfe, guidance_scale, ratios} or a tuple (nfe, guidance_scale, ratios)."""
    if isinstance(item, Record):
        return item
    if isinstance(item, Mapping):
        nfe, scale, ratios = item.get("nfe"), item.get("guidance_scale", 1.0), item.get("ratios")
    else:
        nfe, scale, ratios = item
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"a CPR record needs a positive integer nfe, got {nfe!r}")
    if ratios is None or len(ratios) != nfe:
        raise ValueError(f"a CPR record at nfe={nfe} needs {nfe} ratios (one per step), got {ratios!r}")
    return Record(nfe, float(scale), tuple(float(r) for r in ratios))


def design_row(nfe: int, guidance_scale: float, step: int) -> np.ndarray:
    """The 36 monomials x^k g^(2-a) n^(2-b) that multiply the flat coefficients at one step."""
    x, g, n = step / nfe, guidance_scale / CPR_GUIDANCE_SCALE, nfe / CPR_NFE_SCALE
    k, a, b = np.meshgrid(*(np.arange(d) for d in CPR_SHAPE), indexing="ij")
    return (x**k * g ** (2 - a) * n ** (2 - b)).reshape(-1)


@dataclass
class CascadeRegression:
    """The cascade of DC-Solver's CPR: `fit(records)`, `predict(nfe, guidance_scale)`, JSON `save` / `load`."""

    coefficients: Optional[list[float]] = None
    dc_order: int = 2
    records: list[Record] = field(default_factory=list)

    @classmethod
    def from_coefficients(cls, coefficients: Sequence[float], dc_order: int = 2) -> "CascadeRegression":
        """A fitted cascade from its 36 coefficients (flat, official (k, a, b) order; e.g. the official SD-2.1 file)."""
        return cls(check_cpr_coefficients(coefficients), dc_order)

    def fit(self, records: Iterable[Any]) -> "CascadeRegression":
        """Least-squares fit of the 36 coefficients to every step s > dc_order of the records (see the module doc)."""
        records = [as_record(r) for r in records]
        if len({(r.nfe, r.guidance_scale) for r in records}) < MIN_RECORDS:
            raise ValueError(f"CascadeRegression.fit needs at least {MIN_RECORDS} distinct (nfe, guidance_scale) "
                             f"records, got {len(records)}")
        rows, targets = [], []
        for r in records:
            for step in range(self.dc_order + 1, r.nfe + 1):
                rows.append(design_row(r.nfe, r.guidance_scale, step))
                targets.append(r.ratios[step - 1])
        if not rows:
            raise ValueError(f"the records have no step beyond dc_order={self.dc_order} to fit")
        solution, *_ = np.linalg.lstsq(np.stack(rows), np.asarray(targets), rcond=None)
        self.coefficients, self.records = [float(v) for v in solution], records
        return self

    def predict(self, nfe: int, guidance_scale: float = 1.0) -> list[float]:
        """The ratio vector of an `nfe`-step run at `guidance_scale` (1 for the first dc_order steps)."""
        if self.coefficients is None:
            raise ValueError("CascadeRegression.predict needs fitted coefficients: call fit(records) or from_coefficients")
        return cpr_ratios(self.coefficients, nfe, float(guidance_scale), self.dc_order)

    def residual(self) -> float:
        """Root-mean-square difference between the fitted cascade and the records' ratios (steps > dc_order)."""
        diffs = [p - r for rec in self.records for p, r in zip(self.predict(rec.nfe, rec.guidance_scale)[self.dc_order:],
                                                              rec.ratios[self.dc_order:])]
        return float(np.sqrt(np.mean(np.square(diffs)))) if diffs else 0.0

    # --- plain-data persistence ----------------------------------------------------------------
    def to_document(self, key: Optional[Mapping[str, Any]] = None) -> dict:
        if self.coefficients is None:
            raise ValueError("an unfitted CascadeRegression cannot be saved")
        return cpr_document(self.coefficients, key or {}, dc_order=self.dc_order,
                            records=[{"nfe": r.nfe, "guidance_scale": r.guidance_scale, "ratios": list(r.ratios)}
                                     for r in self.records])

    def save(self, path: Union[str, Path], key: Optional[Mapping[str, Any]] = None) -> Path:
        """Write the cascade (and its `key`: what it was fitted for, see dc_artifacts) as JSON."""
        path = Path(path)
        write_json(path, self.to_document(key))
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "CascadeRegression":
        """A cascade saved by `save` (or any CPR artefact)."""
        cpr = read_cpr_file(path)
        doc = json.loads(Path(path).read_text())
        records = [as_record(r) for r in doc.get("records", [])]
        return cls(cpr.coefficients, int(doc.get("dc_order", 2)), records)
