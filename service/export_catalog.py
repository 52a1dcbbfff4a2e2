"""``journeyrec export-catalog``: the trained catalog merged with the live catalog, as the native catalog
CSV that ``journeyrec train --catalog`` reads, so that the next model learns the new items.

Rows: every item of the live model's catalog in its order, with the live catalog's fields where it has the
item, then the items only the live catalog has (new items) by id. Columns: the native ones (``item_id``,
``kind``, ``title``, ``category``, ``price``, ``tags``, ``stages``, ``in_stock``, ``repeatable``; lists
``|``-separated), then ``hidden``, ``retired``, ``available_from``, ``expires_at`` and ``updated_at``
(ISO-8601 UTC; empty when not set), which training does not read.

Hidden, scheduled and retired items are written and flagged, not left out: their events still teach the
model (an item left out of the catalog would come back from the events without its features), and what is
served stays decided by the live catalog, which the store keeps across retrains, so a retired item stays
retired under the next model too. The file appears complete or not at all (written beside ``out``, then
renamed over it).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

import msgspec

from models import artifact
from models.domain import CatalogItem
from models.errors import InvalidInputError, StoreUnavailableError
from models.overlay import CatalogOverlay, LiveItem
from service.export import out_file, safe_url
from service.schemas import iso_utc
from service.settings import Settings
from service.store.redis_catalog import RedisCatalog

NATIVE_COLUMNS = ("item_id", "kind", "title", "category", "price", "tags", "stages", "in_stock", "repeatable")
FLAG_COLUMNS = ("hidden", "retired", "available_from", "expires_at", "updated_at")


class CatalogExportSummary(msgspec.Struct, frozen=True, kw_only=True):
    """items: rows written; trained / changed / new: rows from the model alone, from the model with live
    changes, only in the live catalog; hidden / retired: rows flagged so; version: the live catalog's."""

    items: int
    trained: int
    changed: int
    new: int
    hidden: int
    retired: int
    version: int
    model_version: str
    path: str

    def __str__(self) -> str:
        return (
            f"exported {self.items} items to {self.path} (model {self.model_version}: {self.trained} as "
            f"trained, {self.changed} with live changes; {self.new} new; {self.hidden} hidden and "
            f"{self.retired} retired, flagged) at live catalog version {self.version}"
        )


def _time(t: float | None) -> str:
    if t is None:
        return ""
    return iso_utc(t)


def _row(item: CatalogItem, live: LiveItem | None) -> list[str]:
    native = [
        item.item_id,
        item.kind.value,
        item.title,
        item.category,
        "" if item.price is None else repr(float(item.price)),
        "|".join(item.tags),
        "|".join(s.value for s in item.stages),
        str(item.in_stock).lower(),
        str(item.repeatable).lower(),
    ]
    if live is None:
        return [*native, "false", "false", "", "", ""]
    flags = [str(live.hidden).lower(), str(live.retired).lower()]
    times = [_time(live.available_from), _time(live.expires_at), _time(live.updated_at)]
    return [*native, *flags, *times]


def catalog_rows(
    trained: list[CatalogItem], overlay: CatalogOverlay
) -> tuple[list[list[str]], dict[str, int]]:
    """The CSV rows (header first) and the counts of the summary."""
    live = overlay.items
    known = {c.item_id for c in trained}
    new = sorted(i for i in live if i not in known)
    rows: list[list[str]] = [[*NATIVE_COLUMNS, *FLAG_COLUMNS]]
    rows += [_row(live[c.item_id].item if c.item_id in live else c, live.get(c.item_id)) for c in trained]
    rows += [_row(live[i].item, live[i]) for i in new]
    entries = list(live.values())
    counts = {
        "changed": sum(1 for c in trained if c.item_id in live),
        "new": len(new),
        "hidden": sum(1 for e in entries if e.hidden),
        "retired": sum(1 for e in entries if e.retired),
    }
    return rows, counts


async def export_catalog(settings: Settings, out: Path) -> CatalogExportSummary:
    """Write the merged catalog of ``settings.models_dir`` (its ``latest``) and the live catalog in
    ``settings.redis_url`` to ``out``. Raises InvalidInputError for a missing setting or a bad ``out``,
    ArtifactError when the model cannot be read, StoreUnavailableError when Redis cannot be read (``out``
    is then left untouched)."""
    if not settings.redis_url:
        raise InvalidInputError("exporting the live catalog needs a Redis URL (--redis-url)")
    if not settings.models_path:
        raise InvalidInputError("exporting the catalog needs the models directory (--models)")
    out = out_file(out)
    bundle = artifact.load(settings.models_path)
    store = RedisCatalog.from_url(
        settings.redis_url, prefix=settings.redis_prefix, socket_timeout=settings.redis_socket_timeout
    )
    try:
        overlay = await store.overlay()
    except StoreUnavailableError as e:
        cause = e.__cause__ or e
        detail = " ".join(str(cause).split())
        where = safe_url(settings.redis_url)
        raise StoreUnavailableError(
            f"cannot read the live catalog from {where}: {type(cause).__name__}: {detail}"
        ) from cause
    finally:
        await store.close()
    rows, counts = catalog_rows(bundle.catalog, overlay)
    text = io.StringIO(newline="")
    csv.writer(text, lineterminator="\n").writerows(rows)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text.getvalue())
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return CatalogExportSummary(
        items=len(rows) - 1,
        trained=len(bundle.catalog) - counts["changed"],
        model_version=bundle.manifest.version,
        version=overlay.version,
        path=str(out),
        **counts,
    )
