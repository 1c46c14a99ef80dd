"""The learned router's artefact: one versioned ``.npz`` file written by ``tierwise train``.

Arrays are the model's (per family: weights, standardisation, or the kNN points); the metadata is a
JSON document stored in the same file under ``meta.json`` (uint8 bytes, so ``np.load`` never needs
pickle)::

    format, format_version      "tierwise-router", 1
    router                      "utility" for a quality − λ·cost router (``train_utility.py``,
                                ``policy/utility.py``); absent for the gap-threshold router
    feature_version             policy.learned.FEATURE_VERSION the model was trained with
    embedding                   the static table it reads (wordllama 0.4.0.post1, l2_supercat, dim)
    family, params              "linear" | "mlp" | "knn" (a utility router: "ridge" | "knn" |
                                "cluster" | "mf" | "blend" | "ensemble"), and the hyper-parameters
                                chosen by inner CV
    models, reference           fleet models (name, dataset model per training set, price) cheapest
                                first; the index of the strongest, the gaps' reference
    training                    datasets (name, sha256, prompts), data_sha256 of the rows used, counts
    calibration                 threshold → strong share, $/1k requests, quality, relative quality,
                                measured on out-of-fold predictions of the training data (with a
                                config that has a cascade: of the whole hybrid, ``calibration_of``
                                says so; see ``evals/hybrid.py``); a utility router's thresholds
                                are its λ grid, and it stores each model's cost source (token
                                counts or recorded USD), which models it may choose, and the cost
                                λ is measured in (``cost_scale_usd``)
    metrics                     the model-family comparison and out-of-fold APGR/CPT
    arrays_sha256               checked on load: a damaged or edited file is refused
    created, tierwise_version

Loading checks the format and feature versions and the array hash, and raises ConfigError naming the
file and what to do (retrain) — never a stack trace from numpy.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ._version import __version__
from .config import Config
from .errors import ConfigError

FORMAT = "tierwise-router"
FORMAT_VERSION = 1
_META = "meta.json"


@dataclass(frozen=True, slots=True)
class Artefact:
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    sha256: str = ""  # of the file's bytes, when read from one

    @property
    def version(self) -> str:
        """Short identifier for policy versions and logs: family and file hash."""
        return f"{self.meta['family']}-{(self.sha256 or arrays_sha256(self.arrays))[:10]}"


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write_artefact(path: str | os.PathLike[str], meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays and metadata (format fields, array hash and time are added) to one ``.npz`` file."""
    path = Path(path)
    if _META.removesuffix(".json") in arrays:
        raise ValueError(f"array name {_META!r} is reserved")
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **meta,
        "arrays_sha256": arrays_sha256(arrays),
        "created": meta.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tierwise_version": __version__,
    }
    encoded = np.frombuffer(orjson.dumps(full, option=orjson.OPT_SERIALIZE_NUMPY), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays, **{_META.removesuffix(".json"): encoded})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def read_artefact(path: str | os.PathLike[str]) -> Artefact:
    """Read and check an artefact; ConfigError names the file and the problem."""
    from .policy import utility
    from .policy.learned import FAMILIES, FEATURE_VERSION

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"policy.learned.artefact: cannot read {path}: {exc.strerror}; write one with tierwise train"
        ) from None
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = orjson.loads(arrays.pop(_META.removesuffix(".json")).tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a tierwise router artefact ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a tierwise router artefact (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{path}: artefact format version {meta.get('format_version')}, this tierwise reads "
            f"{FORMAT_VERSION}: retrain it with tierwise train"
        )
    if meta.get("feature_version") != FEATURE_VERSION:
        raise ConfigError(
            f"{path}: trained on features {meta.get('feature_version')!r}, this tierwise computes "
            f"{FEATURE_VERSION!r}: retrain it with tierwise train"
        )
    router = meta.get("router", "gap")
    if router not in ("gap", "utility"):
        raise ConfigError(f"{path}: unknown router kind {router!r}: retrain it with tierwise train")
    if meta.get("family") not in (utility.FAMILIES if router == "utility" else FAMILIES):
        raise ConfigError(f"{path}: unknown model family {meta.get('family')!r}")
    if arrays_sha256(arrays) != meta.get("arrays_sha256"):
        raise ConfigError(f"{path}: the arrays do not match their recorded sha256: the file is damaged")
    return Artefact(meta, arrays, hashlib.sha256(raw).hexdigest())


def load_learned_router(config: Config, *, embedder: Any = None) -> Any:
    """The ``policy.learned`` router of a config: artefact, embeddings, threshold (or λ) from the target.

    The artefact says which router it is: the gap-threshold router (``policy.learned.LearnedRouter``)
    or the utility router (``policy.utility.UtilityRouter``). Fleet models are matched to the
    artefact's by name, else by ``upstream``; artefact models the fleet lacks are left out.
    ``embedder`` reuses an already-loaded table (tests, several routers).
    """
    from .policy.learned import Calibration, LearnedRouter, make_scorer, threshold_for

    learned = config.policy.learned
    if learned is None:
        raise ValueError("load_learned_router: the config has no policy.learned")
    artefact = read_artefact(learned.artefact)
    if embedder is None:
        from .embeddings import load_wordllama

        embedder = load_wordllama(dim=int(artefact.meta["embedding"]["dim"]))
    if artefact.meta.get("router") == "utility":
        return _utility_router(config, artefact, embedder)
    if learned.cost_weight is not None:
        raise ConfigError(
            f"policy.learned.cost_weight: {learned.artefact} is a gap-threshold router, which has no "
            "cost weight; set policy.learned.threshold or target, or train one with --router utility"
        )
    names = [m["name"] for m in artefact.meta["models"]]
    reference_name = names[int(artefact.meta["reference"])]
    by_name = {m.name: m for m in config.models}
    by_upstream = {m.upstream: m for m in config.models}
    present: list[tuple[float, str, int]] = []  # (price, fleet name, artefact column)
    for column, name in enumerate(names):
        entry = by_name.get(name) or by_upstream.get(name)
        if entry is not None:
            present.append((entry.price.input_per_mtok + entry.price.output_per_mtok, entry.name, column))
    reference = next((p for p in present if p[2] == names.index(reference_name)), None)
    if reference is None:
        raise ConfigError(
            f"policy.learned.artefact: {learned.artefact} routes against {reference_name!r}, which is not "
            f"a model of this fleet (by name or upstream); its models: {', '.join(names)}"
        )
    present.sort(key=lambda p: (p[0], p[2] != reference[2]))  # the reference first among equal prices
    calibration = Calibration.from_json(artefact.meta["calibration"])
    if learned.threshold is not None:
        threshold = learned.threshold
    elif learned.target is not None:
        threshold = threshold_for(calibration, **learned.target.model_dump(exclude_none=True))
    else:
        threshold = float(artefact.meta["default_threshold"])
    return LearnedRouter(
        make_scorer(artefact.meta["family"], artefact.arrays, artefact.meta.get("params", {})),
        embedder,
        models=[p[1] for p in present],
        reference=present.index(reference),
        threshold=threshold,
        uncertain_band=learned.uncertain_band,
        version=artefact.version,
        columns=[p[2] for p in present],
    )


def _utility_router(config: Config, artefact: Artefact, embedder: Any) -> Any:
    """A utility artefact as the config's router: the fleet's prices price the predicted tokens."""
    from .policy.learned import Calibration, threshold_for
    from .policy.utility import CostModel, UtilityRouter, make_predictor

    learned = config.policy.learned
    assert learned is not None
    meta = artefact.meta
    if learned.threshold is not None:
        raise ConfigError(
            f"policy.learned.threshold: {learned.artefact} is a utility router (quality − λ·cost); "
            "set policy.learned.cost_weight (λ) or target instead"
        )
    by_name = {m.name: m for m in config.models}
    by_upstream = {m.upstream: m for m in config.models}
    present = []  # (fleet entry, artefact column)
    for column, model in enumerate(meta["models"]):
        entry = by_name.get(model["name"]) or by_upstream.get(model["name"])
        if entry is not None:
            present.append((entry, column))
    allowed = [bool(meta["models"][column].get("allowed", True)) for _, column in present]
    if not any(allowed):
        names = ", ".join(m["name"] for m in meta["models"] if m.get("allowed", True))
        raise ConfigError(
            f"policy.learned.artefact: {learned.artefact} may choose only {names}, none of which is a "
            "model of this fleet (by name or upstream)"
        )
    if learned.cost_weight is not None:
        cost_weight = learned.cost_weight
    else:
        calibration = Calibration.from_json(meta["calibration"])
        if learned.target is not None:
            cost_weight = threshold_for(calibration, **learned.target.model_dump(exclude_none=True))
        else:
            cost_weight = float(meta["default_cost_weight"])
    costs = CostModel(
        np.array([meta["models"][column]["cost_from"] == "tokens" for _, column in present]),
        np.array([entry.price.input_per_mtok for entry, _ in present], dtype=np.float64),
        np.array([entry.price.output_per_mtok for entry, _ in present], dtype=np.float64),
    )
    arrays = {k: v for k, v in artefact.arrays.items() if k not in ("mean", "scale")}
    return UtilityRouter(
        make_predictor(meta["family"], arrays, meta.get("params", {})),
        embedder,
        models=[entry.name for entry, _ in present],
        columns=[column for _, column in present],
        mean=artefact.arrays["mean"],
        scale=artefact.arrays["scale"],
        costs=costs,
        allowed=np.array(allowed),
        cost_weight=cost_weight,
        cost_scale=float(meta["cost_scale_usd"]),
        uncertain_band=learned.uncertain_band,
        version=artefact.version,
    )
