"""The model artifact: a directory of ``manifest.json`` + ``arrays.npz`` + JSON id maps, hashed.

Publishing writes a hidden temp directory beside the target, renames it into place (atomic on one
filesystem) and then replaces the ``latest`` symlink atomically. Loading verifies every file's sha256
and every array's shape against the manifest and refuses anything else. No pickle anywhere:
``np.load(..., allow_pickle=False)`` and msgspec JSON.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import scipy.sparse as sp

from models.blend import N_FEATURES, BlendWeights
from models.domain import CatalogItem
from models.errors import ArtifactError, InvalidInputError
from models.factors import FactorModel
from models.features import Vocabulary
from models.journey import JourneyRules
from models.serving_rules import ServingRules
from models.sources import ItemTables, category_codes, repeatable_flags
from models.weights import EventWeights

FORMAT = "journeyrec-model/1"
LATEST = "latest"
ARRAYS = "arrays.npz"
CATALOG = "catalog.json"
USER_VOCAB = "user_vocab.json"
ITEM_VOCAB = "item_vocab.json"
MANIFEST = "manifest.json"
_CSR = ("item_features", "complements", "similar")


class FileEntry(msgspec.Struct, frozen=True):
    sha256: str
    bytes: int


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """Describes one published model version."""

    format: str
    version: str
    created_at: str
    data_fingerprint: str
    trained_until: float
    n_items: int
    n_visitors: int
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    blend: BlendWeights
    rules: JourneyRules
    weights: EventWeights
    files: dict[str, FileEntry]
    shapes: dict[str, list[int]]
    # a manifest without it loads with the defaults
    serving: ServingRules = msgspec.field(default_factory=ServingRules)


@dataclass(frozen=True)
class ModelBundle:
    """Everything a model directory holds, in memory."""

    manifest: Manifest
    factors: FactorModel
    tables: ItemTables
    blend_weights: np.ndarray  # float32 [n_stages, n_features]
    catalog: list[CatalogItem]
    user_vocab: Vocabulary
    item_vocab: Vocabulary
    price_edges: np.ndarray
    directory: Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _arrays(
    factors: FactorModel, tables: ItemTables, blend_weights: np.ndarray, price_edges: np.ndarray
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {
        "user_emb": factors.user_emb,
        "user_bias": factors.user_bias,
        "item_emb": factors.item_emb,
        "item_bias": factors.item_bias,
        "popularity": tables.popularity,
        "trending": tables.trending,
        "repeat_rate": tables.repeat_rate,
        "known": tables.known,
        **({} if tables.category_repeat is None else {"category_repeat": tables.category_repeat}),
        "blend_weights": blend_weights,
        "price_edges": price_edges,
    }
    sparse = [
        ("item_features", factors.item_features),
        ("complements", tables.complements),
        ("similar", tables.similar),
    ]
    if tables.visitor_baskets is not None:
        sparse.append(("visitor_baskets", tables.visitor_baskets))
    for name, m in sparse:
        c = m.tocsr()
        out[f"{name}.data"] = c.data.astype(np.float32)
        out[f"{name}.indices"] = c.indices.astype(np.int32)
        out[f"{name}.indptr"] = c.indptr.astype(np.int64)
        out[f"{name}.shape"] = np.asarray(c.shape, dtype=np.int64)
    return out


def new_version(now: dt.datetime | None = None) -> str:
    t = now or dt.datetime.now(dt.UTC)
    return t.strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


def publish(
    models_dir: Path,
    *,
    factors: FactorModel,
    tables: ItemTables,
    blend: BlendWeights,
    blend_weights: np.ndarray,
    catalog: list[CatalogItem],
    user_vocab: Vocabulary,
    item_vocab: Vocabulary,
    price_edges: np.ndarray,
    rules: JourneyRules,
    weights: EventWeights,
    serving: ServingRules,
    data_fingerprint: str,
    trained_until: float,
    n_visitors: int,
    parameters: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a new version under ``models_dir`` atomically and point ``latest`` at it. Returns its path."""
    models_dir.mkdir(parents=True, exist_ok=True)
    version = new_version()
    tmp = models_dir / f".tmp-{version}"
    tmp.mkdir()
    try:
        arrays = _arrays(factors, tables, blend_weights, price_edges)
        np.savez(tmp / ARRAYS, allow_pickle=False, **arrays)
        (tmp / CATALOG).write_bytes(msgspec.json.encode(catalog))
        (tmp / USER_VOCAB).write_bytes(msgspec.json.encode(user_vocab))
        (tmp / ITEM_VOCAB).write_bytes(msgspec.json.encode(item_vocab))
        files = {
            name: FileEntry(_sha256(tmp / name), (tmp / name).stat().st_size)
            for name in (ARRAYS, CATALOG, USER_VOCAB, ITEM_VOCAB)
        }
        manifest = Manifest(
            format=FORMAT,
            version=version,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            data_fingerprint=data_fingerprint,
            trained_until=trained_until,
            n_items=len(catalog),
            n_visitors=n_visitors,
            parameters=parameters,
            metrics=metrics or {},
            blend=blend,
            rules=rules,
            weights=weights,
            serving=serving,
            files=files,
            shapes={k: list(v.shape) for k, v in arrays.items()},
        )
        (tmp / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
        for p in tmp.iterdir():
            with p.open("rb") as f:
                os.fsync(f.fileno())
        final = models_dir / version
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    point_latest(models_dir, version)
    return final


def point_latest(models_dir: Path, version: str) -> None:
    """Point ``models_dir/latest`` at ``version`` atomically: a reader sees the old or the new link, never
    none (a temporary link renamed over it)."""
    link_tmp = models_dir / f".latest-{version}-{os.getpid()}"
    link_tmp.unlink(missing_ok=True)
    os.symlink(version, link_tmp)
    os.replace(link_tmp, models_dir / LATEST)


def latest_name(models_dir: Path) -> str | None:
    """The version ``latest`` names, or None when nothing is published."""
    link = models_dir / LATEST
    return os.readlink(link) if link.is_symlink() else None


def prune(models_dir: Path, keep: int, *, protect: Iterable[str] = (), dry_run: bool = False) -> list[str]:
    """Remove all but the newest ``keep`` published versions (>= 1), never the one ``latest`` names nor any in
    ``protect``; returns the removed versions, oldest first (with ``dry_run``: those it would remove). A
    version is first renamed out of the listing (``.pruned-<version>``), then deleted: a reader never finds
    it half-deleted under its name. Versions being published (``.tmp-*``) are not listed, so never touched."""
    if keep < 1:
        raise InvalidInputError(f"--keep {keep}: keep at least 1 version")
    versions = list_versions(models_dir)
    spared = {*protect, *filter(None, [latest_name(models_dir)]), *versions[-keep:]}
    doomed = [v for v in versions if v not in spared]
    if dry_run:
        return doomed
    for version in doomed:
        trash = models_dir / f".pruned-{version}"
        os.replace(models_dir / version, trash)
        shutil.rmtree(trash)
    return doomed


def resolve_latest(models_dir: Path) -> Path:
    """The version directory the ``latest`` pointer names (or ``models_dir`` itself if it is a version)."""
    if (models_dir / MANIFEST).is_file():
        return models_dir
    link = models_dir / LATEST
    if not link.exists():
        raise ArtifactError(
            f"{models_dir}: no model published yet (no '{LATEST}' pointer); run 'journeyrec train'"
        )
    return (models_dir / os.readlink(link)) if link.is_symlink() else link


def list_versions(models_dir: Path) -> list[str]:
    """Published versions under ``models_dir``, oldest first."""
    if not models_dir.is_dir():
        return []
    return sorted(
        p.name for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != LATEST
    )


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; not a journeyrec model directory")
    try:
        m = msgspec.json.decode(path.read_bytes(), type=Manifest)
    except msgspec.ValidationError as e:
        raise ArtifactError(f"{path}: invalid manifest: {e}") from None
    except msgspec.DecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON: {e}") from None
    if m.format != FORMAT:
        raise ArtifactError(f"{path}: format {m.format!r} is not supported (expected {FORMAT!r})")
    return m


def load(directory: Path) -> ModelBundle:
    """Load and verify a model version directory (or a models dir with a ``latest`` pointer).

    Any failure while reading or checking the version is a refusal: ArtifactError naming the directory and
    the reason (a zip damaged inside ``arrays.npz``, an unreadable file, arrays that do not fit together),
    never another exception, so a caller that keeps serving an older version needs to handle one error.
    """
    path = Path(directory)
    try:
        return _load(resolve_latest(path))
    except ArtifactError:
        raise
    except Exception as e:  # every failure while reading a version refuses it
        raise ArtifactError(f"{path}: cannot read the model: {type(e).__name__}: {e}") from e


def _load(directory: Path) -> ModelBundle:
    manifest = read_manifest(directory)
    for name, entry in manifest.files.items():
        p = directory / name
        if not p.is_file():
            raise ArtifactError(f"{p}: missing (listed in the manifest)")
        if p.stat().st_size != entry.bytes or _sha256(p) != entry.sha256:
            raise ArtifactError(f"{p}: sha256 does not match the manifest; the file was changed or corrupted")
    for required in (ARRAYS, CATALOG, USER_VOCAB, ITEM_VOCAB):
        if required not in manifest.files:
            raise ArtifactError(f"{directory / MANIFEST}: does not list {required}")
    try:
        with np.load(directory / ARRAYS, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, a bad .npy header, a pickled array...
        raise ArtifactError(f"{directory / ARRAYS}: cannot read the arrays: {type(e).__name__}: {e}") from e
    try:
        catalog = msgspec.json.decode((directory / CATALOG).read_bytes(), type=list[CatalogItem])
        user_vocab = msgspec.json.decode((directory / USER_VOCAB).read_bytes(), type=Vocabulary)
        item_vocab = msgspec.json.decode((directory / ITEM_VOCAB).read_bytes(), type=Vocabulary)
    except Exception as e:  # invalid JSON or UTF-8, a wrong type, an unreadable file
        raise ArtifactError(f"{directory}: cannot read the id maps: {type(e).__name__}: {e}") from e
    if set(arrays) != set(manifest.shapes):
        odd = sorted(set(arrays) ^ set(manifest.shapes))
        raise ArtifactError(f"{directory / ARRAYS}: arrays {odd} differ from the manifest")
    for k, shape in manifest.shapes.items():
        if list(arrays[k].shape) != shape:
            raise ArtifactError(
                f"{directory / ARRAYS}: array {k!r} has shape {list(arrays[k].shape)}, manifest says {shape}"
            )
    return _assemble(manifest, arrays, catalog, user_vocab, item_vocab, directory)


def _csr(arrays: dict[str, np.ndarray], name: str) -> sp.csr_matrix:
    shape = tuple(int(x) for x in arrays[f"{name}.shape"])
    return sp.csr_matrix(
        (arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"]), shape=shape
    )


def _assemble(
    manifest: Manifest,
    a: dict[str, np.ndarray],
    catalog: list[CatalogItem],
    user_vocab: Vocabulary,
    item_vocab: Vocabulary,
    directory: Path,
) -> ModelBundle:
    n_items, n_uf, n_if = len(catalog), len(user_vocab.names), len(item_vocab.names)
    checks = {
        "item_features.shape": [n_items, n_if],
        "user_emb": [n_uf, a["user_emb"].shape[1]],
        "item_emb": [n_if, a["user_emb"].shape[1]],
        "popularity": [n_items],
        "complements.shape": [n_items, n_items],
        "similar.shape": [n_items, n_items],
    }
    if "visitor_baskets.shape" in a:  # a row per visitor of the model, in the vocabulary's order
        checks["visitor_baskets.shape"] = [manifest.n_visitors, n_items]
    for k, want in checks.items():
        got = a[k].tolist() if k.endswith(".shape") else list(a[k].shape)
        if got != want:
            raise ArtifactError(f"{directory}: {k} is {got}, inconsistent with the id maps (expected {want})")
    factors = FactorModel(
        a["user_emb"], a["user_bias"], a["item_emb"], a["item_bias"], _csr(a, "item_features")
    )
    tables = ItemTables(
        a["popularity"],
        a["trending"],
        a["repeat_rate"],
        _csr(a, "complements"),
        _csr(a, "similar"),
        a["known"],
        category_codes(catalog),
        as_of=manifest.trained_until,
        category_repeat=a.get("category_repeat"),  # a model published before it: the items' own rates
        repeatable=repeatable_flags(catalog),
        # a model published before the basket-neighbours source: that source stays empty
        visitor_baskets=_csr(a, "visitor_baskets") if "visitor_baskets.shape" in a else None,
    )
    blend_weights = a["blend_weights"]
    if blend_weights.shape[1] != N_FEATURES:  # fitted before a feature existed: that feature weighs 0
        blend_weights = manifest.blend.matrix()
    return ModelBundle(
        manifest,
        factors,
        tables,
        blend_weights,
        catalog,
        user_vocab,
        item_vocab,
        a["price_edges"],
        directory,
    )
