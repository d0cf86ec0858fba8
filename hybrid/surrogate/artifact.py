"""The surrogate artifact: a directory of safetensors arrays and one JSON file.

::

    DIR/surrogate.json        metadata (format, kind, case, parameter space, QoI names, store
                              checksum, POD and training settings, metrics, versions) and the
                              SHA-256 of every other file, plus a hash of the metadata itself
    DIR/basis.safetensors     "modes" (n, N): the POD basis, X-orthonormal
    DIR/reduced.safetensors   reduced operators A (Q_a, n, n), f (Q_f, n), qoi, observations,
                              gram; the error estimator's R_f, R_a, theta_ref, mu_ref; the POD
                              singular values; optionally observations_a (n_obs, Q_a, n) and
                              observations_f (n_obs, Q_f), μ-dependent observations (fluxes)
    DIR/network.safetensors   the network's weights and scalings (POD-NN only)
    DIR/training.png, modes.png  plots written by ``hybrid train`` (not needed to load)

Loading reads JSON and safetensors only — formats that hold data, never code (no pickle) —
checks the SHA-256 of every file listed and of the metadata before using anything, and
raises :class:`~hybrid.surrogate.errors.SurrogateError` with one line naming the file and
what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from hybrid.surrogate.errors import SurrogateError

FORMAT = "hybrid-surrogate"
FORMAT_VERSION = 1
META = "surrogate.json"
GROUPS = ("basis", "reduced", "network")


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _meta_hash(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_artifact(path: str | Path, meta: dict, groups: dict[str, dict[str, np.ndarray]],
                   extra_files: dict[str, bytes] | None = None) -> Path:
    """Write the arrays of each group to GROUP.safetensors and the metadata to surrogate.json.

    Every file is written atomically (temporary name, fsync, rename); surrogate.json last, so
    a reader never sees metadata pointing at files that are not complete.
    """
    from safetensors.numpy import save

    from hybrid.core.store import atomic_path

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SurrogateError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / META).is_file():
        raise SurrogateError(f"{path}: directory is not empty and holds no surrogate; "
                             "refusing to write into it")
    path.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, arrays in groups.items():
        if not arrays:
            continue
        blob = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
        fname = f"{name}.safetensors"
        with atomic_path(path / fname) as tmp:
            tmp.write_bytes(blob)
        files[fname] = hashlib.sha256(blob).hexdigest()
    for fname, blob in (extra_files or {}).items():
        with atomic_path(path / fname) as tmp:
            tmp.write_bytes(blob)
    meta = {**meta, "format": FORMAT, "format_version": FORMAT_VERSION, "files": files}
    meta["meta_sha256"] = _meta_hash(meta)
    with atomic_path(path / META) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return path


def read_artifact(path: str | Path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Read and verify an artifact; return (metadata, {group: {name: array}})."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    mf = path / META
    if not path.is_dir():
        raise SurrogateError(f"{path}: no such surrogate directory")
    if not mf.is_file():
        raise SurrogateError(f"{path}: not a surrogate (no {META})")
    try:
        meta = json.loads(mf.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SurrogateError(f"{mf}: metadata is corrupted ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SurrogateError(f"{mf}: not a hybrid surrogate")
    if meta.get("format_version") != FORMAT_VERSION:
        raise SurrogateError(f"{mf}: surrogate format version {meta.get('format_version')} is "
                             f"not supported (this hybrid reads version {FORMAT_VERSION})")
    if meta.get("meta_sha256") != _meta_hash(meta):
        raise SurrogateError(f"{mf}: metadata checksum mismatch (the file was modified)")
    groups: dict[str, dict[str, np.ndarray]] = {}
    for fname, digest in meta.get("files", {}).items():
        f = path / fname
        if not f.is_file():
            raise SurrogateError(f"{f}: file of the surrogate is missing")
        blob = f.read_bytes()
        if hashlib.sha256(blob).hexdigest() != digest:
            raise SurrogateError(f"{f}: checksum mismatch (file corrupted or modified)")
        try:
            groups[fname.removesuffix(".safetensors")] = load(blob)
        except (SafetensorError, ValueError) as exc:
            raise SurrogateError(f"{f}: unreadable ({exc})") from None
    return meta, groups
