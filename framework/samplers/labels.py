"""The one name of a configured sampler, used for files, logged metric keys, tables and plots alike."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

_LABEL = re.compile(r"^[A-Za-z0-9_.,+=-]+$")
#: keys of a sampler entry that are not options of the sampler
ENTRY_KEYS = ("name", "label", "nfe")


def sampler_label(config: Mapping[str, Any]) -> str:
    """`label` if the entry gives one, else the name and its options: {name: deis, ab_order: 3} -> 'deis_ab_order3'.

    The result only uses letters, digits and _ . , + = - so that it is a file name and a metric key as it is.
    """
    if "label" in config:
        label = str(config["label"])
        if not _LABEL.match(label):
            raise ValueError(f"sampler label {label!r} may only use letters, digits and _ . , + = -")
        return label
    opts = {k: v for k, v in config.items() if k not in ENTRY_KEYS}
    parts = [str(config["name"])] + [f"{k}{json.dumps(v, separators=(',', ':')) if isinstance(v, (dict, list)) else v}"
                                     for k, v in opts.items()]
    return re.sub(r"[^A-Za-z0-9_.,+=-]", "", "_".join(parts))
