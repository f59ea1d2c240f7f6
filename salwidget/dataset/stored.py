"""Maps a dataset job stored, read back for the panel's Maps view (the store's layout is known here only).

:func:`stored_attribution` finds the job of a method's settings (each image's prediction explained) whose
table holds every asked row, under the scan of the model's current weights, and returns its maps as an
:class:`~salwidget.Attribution`; the panel's map cache serves it instead of computing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .jobs import jsonable
from .keys import model_fingerprint
from . import stored_maps
from .store import read_parts


def stored_attribution(scan: Any, model: Any, method: str, options: dict, layer, seed: int, rows: list[int],
                       explorer: Any):
    """A dataset job's stored maps of ``rows`` under these settings (each image's prediction explained), as
    an :class:`~salwidget.Attribution`; None when no job matches or a row is missing (then the Maps view
    computes). Only a scan of the model's current weights is read."""
    folder = Path(scan.store) / "scans" / scan.key / "jobs"
    for meta_path in sorted(folder.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if (meta["method"], meta["options"], meta["layer"], meta["target"], meta["seed"]) != (
                method, jsonable(options), str(layer), "predicted", int(seed)):
            continue
        frame = read_parts(meta_path.parent / "table", columns=["index"])
        if frame is None or not set(rows) <= set(frame["index"].tolist()):
            continue
        if model_fingerprint(model) != scan.model_key:
            return None  # the weights changed since the scan: these maps are someone else's
        return attribution_of(meta_path.parent, meta, rows, explorer)
    return None


def attribution_of(folder, meta: dict, rows: list[int], explorer):
    """An Attribution over stored maps (the maps shown, not recomputed; rescaled where stored scaled), or None
    when a row's maps were lost to a damaged chunk."""
    from ..attribution import Attribution
    from ..methods import get_method

    method = get_method(meta["method"])
    maps, lost = stored_maps.read(Path(folder), np.asarray(rows, np.int64))
    if lost.any():
        return None  # in a damaged chunk (set aside): the Maps view computes them
    options = method.resolve({k: v for k, v in meta["options"].items() if not isinstance(v, str) or v in (
        "uniform", "blur", "riemann", "trapezoid")})
    targets = explorer.scores.argmax(axis=1)
    return Attribution(raw=maps, target=targets, scores=explorer.scores, method=method.name, label=method.label,
                       signed=method.is_signed(options), kind=method.output, options=options,
                       nsamples=int(options.get("nsamples", 1) or 1), nintegration=options.get("nintegration"),
                       seed=int(meta["seed"]), channels_last=explorer.channels_last,
                       layer=None if meta["layer"] == "None" else meta["layer"], targets=(targets,),
                       input_size=explorer.images.shape[1:3] if explorer.channels_last else explorer.images.shape[2:4],
                       extras={"stored": str(folder)})
