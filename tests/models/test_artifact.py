import os
from pathlib import Path

import msgspec
import numpy as np
import pytest
import scipy.sparse as sp

from models import artifact
from models.blend import FEATURE_NAMES, N_FEATURES, BlendWeights, StageBlend
from models.domain import STAGES, CatalogItem, ItemKind
from models.errors import ArtifactError, InvalidInputError
from models.factors import FactorModel
from models.features import Vocabulary
from models.journey import DEFAULT_RULES
from models.serving_rules import DEFAULT_SERVING, ServingRules
from models.sources import ItemTables
from models.weights import EventWeights
from tests.artifact_faults import corrupt_inside_npz, rehash


def _publish(
    root: Path,
    seed: int = 0,
    serving: ServingRules = DEFAULT_SERVING,
    catalog: list[CatalogItem] | None = None,
    category_repeat: np.ndarray | None = None,
    visitor_baskets: sp.csr_matrix | None = None,
) -> Path:
    rng = np.random.default_rng(seed)
    n_items, n_if, n_uf, d = 4, 6, 5, 3
    catalog = catalog or [
        CatalogItem(item_id=f"i{i}", kind=ItemKind.PRODUCT if i < 3 else ItemKind.CONTENT)
        for i in range(n_items)
    ]
    factors = FactorModel(
        user_emb=rng.random((n_uf, d), dtype=np.float32),
        user_bias=rng.random(n_uf, dtype=np.float32),
        item_emb=rng.random((n_if, d), dtype=np.float32),
        item_bias=rng.random(n_if, dtype=np.float32),
        item_features=sp.random(
            n_items, n_if, density=0.5, format="csr", dtype=np.float32, random_state=seed
        ),
    )
    tables = ItemTables(
        popularity=rng.random(n_items, dtype=np.float32),
        trending=rng.random(n_items, dtype=np.float32),
        repeat_rate=rng.random(n_items, dtype=np.float32),
        complements=sp.random(n_items, n_items, density=0.5, format="csr", dtype=np.float32, random_state=1),
        similar=sp.random(n_items, n_items, density=0.5, format="csr", dtype=np.float32, random_state=2),
        known=np.ones(n_items, bool),
        category_repeat=category_repeat,
        visitor_baskets=visitor_baskets,
    )
    blend = BlendWeights([StageBlend(s.value, dict.fromkeys(FEATURE_NAMES, 0.5), 10, "all") for s in STAGES])
    return artifact.publish(
        root,
        factors=factors,
        tables=tables,
        blend=blend,
        blend_weights=blend.matrix(),
        catalog=catalog,
        user_vocab=Vocabulary([f"u{i}" for i in range(n_uf)]),
        item_vocab=Vocabulary([f"f{i}" for i in range(n_if)]),
        price_edges=np.array([1.0, 2.0]),
        rules=DEFAULT_RULES,
        weights=EventWeights(),
        serving=serving,
        data_fingerprint="abc",
        trained_until=123.0,
        n_visitors=7,
        parameters={"epochs": 1},
    )


def test_roundtrip_and_latest_pointer(tmp_path):
    first = _publish(tmp_path, 0)
    second = _publish(tmp_path, 1)
    assert artifact.resolve_latest(tmp_path) == second
    assert artifact.list_versions(tmp_path) == sorted([first.name, second.name])
    b = artifact.load(tmp_path)
    assert b.manifest.version == second.name
    assert b.blend_weights.shape == (len(STAGES), N_FEATURES)
    assert [c.item_id for c in b.catalog] == ["i0", "i1", "i2", "i3"]
    assert b.tables.complements.shape == (4, 4)
    again = artifact.load(first)
    assert not np.allclose(again.factors.user_emb, b.factors.user_emb)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp leftovers


def test_tampered_file_is_refused(tmp_path):
    v = _publish(tmp_path)
    p = v / artifact.ARRAYS
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        artifact.load(v)


def test_missing_file_and_missing_manifest(tmp_path):
    v = _publish(tmp_path)
    os.remove(v / artifact.CATALOG)
    with pytest.raises(ArtifactError, match="missing"):
        artifact.load(v)
    with pytest.raises(ArtifactError, match="no model published"):
        artifact.load(tmp_path / "nowhere")


def test_manifest_edit_without_rehash_is_refused(tmp_path):
    v = _publish(tmp_path)
    m = (v / artifact.MANIFEST).read_text()
    (v / artifact.MANIFEST).write_text(m.replace('"n_items": 4', '"n_items": "four"'))
    with pytest.raises(ArtifactError, match="invalid manifest"):
        artifact.load(v)


def test_shape_mismatch_is_refused_even_with_matching_hashes(tmp_path):
    v = _publish(tmp_path)
    # rewrite the id map with an extra item and re-hash it: hashes agree, shapes do not
    (v / artifact.CATALOG).write_text(
        '[{"item_id":"i0"},{"item_id":"i1"},{"item_id":"i2"},{"item_id":"i3"},{"item_id":"x"}]'
    )
    import hashlib

    import msgspec

    m = artifact.read_manifest(v)
    blob = (v / artifact.CATALOG).read_bytes()
    files = dict(m.files)
    files[artifact.CATALOG] = artifact.FileEntry(hashlib.sha256(blob).hexdigest(), len(blob))
    (v / artifact.MANIFEST).write_bytes(msgspec.json.encode(msgspec.structs.replace(m, files=files)))
    with pytest.raises(ArtifactError, match="inconsistent with the id maps"):
        artifact.load(v)


def test_object_arrays_are_never_unpickled(tmp_path):
    v = _publish(tmp_path)
    arrays = dict(np.load(v / artifact.ARRAYS, allow_pickle=False))
    arrays["popularity"] = np.array([object()] * 4, dtype=object)
    np.savez(v / artifact.ARRAYS, **arrays)  # a pickled object array inside the npz
    with pytest.raises(ArtifactError):
        artifact.load(v)


def test_serving_rules_travel_with_the_model(tmp_path):
    rules = ServingRules(abandoned_cart_score=5.0, touch_recency_days=2.0)
    assert artifact.load(_publish(tmp_path, serving=rules)).manifest.serving == rules


def test_a_manifest_without_serving_rules_loads_with_the_defaults(tmp_path):
    v = _publish(tmp_path, serving=ServingRules(browsed_score=9.0))
    raw = msgspec.json.decode((v / artifact.MANIFEST).read_bytes())
    del raw["serving"]
    (v / artifact.MANIFEST).write_bytes(msgspec.json.encode(raw))
    assert artifact.load(v).manifest.serving == DEFAULT_SERVING


def test_invalid_serving_rules_are_refused(tmp_path):
    v = _publish(tmp_path)
    raw = msgspec.json.decode((v / artifact.MANIFEST).read_bytes())
    raw["serving"]["touch_recency_days"] = 0
    (v / artifact.MANIFEST).write_bytes(msgspec.json.encode(raw))
    with pytest.raises(ArtifactError, match="touch_recency_days must be > 0"):
        artifact.load(v)


def test_damage_inside_the_npz_with_a_matching_hash_is_refused(tmp_path):
    v = _publish(tmp_path)
    corrupt_inside_npz(v)
    with pytest.raises(ArtifactError, match=r"arrays\.npz: cannot read the arrays: BadZipFile: Bad CRC-32"):
        artifact.load(v)


@pytest.mark.parametrize(
    ("name", "blob", "reason"),
    [
        (artifact.ARRAYS, b"PK\x03\x04 not a zip at all", "cannot read the arrays"),
        (artifact.CATALOG, b'[{"item_id": "i\xff"}]', "UnicodeDecodeError"),
        (artifact.USER_VOCAB, b"[1, 2]", "cannot read the id maps"),
    ],
)
def test_any_failure_reading_a_version_is_a_refusal(tmp_path, name, blob, reason):
    v = _publish(tmp_path)
    (v / name).write_bytes(blob)
    rehash(v, name)
    with pytest.raises(ArtifactError, match=reason):
        artifact.load(v)


def test_an_unexpected_error_while_loading_is_a_refusal_naming_it(tmp_path, monkeypatch):
    v = _publish(tmp_path)

    def broken(*_a, **_k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(artifact, "_assemble", broken)
    with pytest.raises(ArtifactError, match="cannot read the model: RuntimeError: disk on fire"):
        artifact.load(v)


def test_a_model_fitted_without_a_feature_scores_with_it_at_weight_zero(tmp_path, monkeypatch):
    """A model published before the ``substitute`` feature existed (its weights have one column fewer)
    loads, and weighs that feature 0."""
    col = FEATURE_NAMES.index("substitute")
    older = [f for f in FEATURE_NAMES if f != "substitute"]
    blend = BlendWeights([StageBlend(s.value, dict.fromkeys(older, 0.5), 10, "all") for s in STAGES])
    monkeypatch.setattr(
        BlendWeights, "matrix", lambda self: np.full((len(STAGES), len(older)), 0.5, np.float32)
    )
    v = _publish(tmp_path)
    monkeypatch.undo()
    raw = msgspec.json.decode((v / artifact.MANIFEST).read_bytes())
    raw["blend"] = msgspec.to_builtins(blend)
    (v / artifact.MANIFEST).write_bytes(msgspec.json.encode(raw))
    assert raw["shapes"]["blend_weights"] == [len(STAGES), N_FEATURES - 1]
    b = artifact.load(v)
    assert b.blend_weights.shape == (len(STAGES), N_FEATURES)
    assert b.blend_weights[:, col].tolist() == [0.0] * len(STAGES)
    assert np.allclose(np.delete(b.blend_weights, col, axis=1), 0.5)


def test_the_tables_know_the_data_time_and_the_categories(tmp_path):
    b = artifact.load(_publish(tmp_path))
    assert b.tables.as_of == 123.0  # trained_until: "trending" reasons are dated by it
    assert b.tables.category is not None
    assert b.tables.category.tolist() == [-1, -1, -1, -1]  # the catalog has no categories


def test_the_tables_keep_the_category_rebuy_rates_and_read_repeatable_from_the_catalog(tmp_path):
    catalog = [
        CatalogItem(item_id="k", category="kettles"),
        CatalogItem(item_id="t", category="tea", repeatable=True),
        CatalogItem(item_id="x"),
        CatalogItem(item_id="c", kind=ItemKind.CONTENT),
    ]
    b = artifact.load(_publish(tmp_path, catalog=catalog, category_repeat=np.array([0.1, 0.7], np.float32)))
    assert b.tables.category_repeat is not None
    assert b.tables.category_repeat.tolist() == pytest.approx([0.1, 0.7])
    assert b.tables.repeatable is not None
    assert b.tables.repeatable.tolist() == [False, True, False, False]
    own = b.tables.repeat_rate
    assert b.tables.rebuy_rate(np.arange(4)).tolist() == pytest.approx(
        [max(own[0], 0.1), 1.0, own[2], own[3]]
    )
    # a model published before the rates were counted: each item's own rate, as it was fitted
    older = artifact.load(_publish(tmp_path / "older", catalog=catalog))
    assert older.tables.category_repeat is None
    assert (
        older.tables.rebuy_rate(np.arange(4)).tolist() == older.tables.item_rebuy_rate(np.arange(4)).tolist()
    )


def test_the_basket_pool_travels_with_the_model(tmp_path):
    pool = sp.random(7, 4, density=0.4, format="csr", dtype=np.float32, random_state=5)
    b = artifact.load(_publish(tmp_path, visitor_baskets=pool))
    assert b.tables.visitor_baskets is not None
    np.testing.assert_array_equal(b.tables.visitor_baskets.toarray(), pool.toarray())
    # a model published before the basket-neighbours source loads without a pool (the source is empty)
    assert artifact.load(_publish(tmp_path / "older")).tables.visitor_baskets is None


def test_a_basket_pool_not_one_row_per_visitor_is_refused(tmp_path):
    pool = sp.random(5, 4, density=0.4, format="csr", dtype=np.float32, random_state=5)
    with pytest.raises(ArtifactError, match=r"visitor_baskets\.shape"):
        artifact.load(_publish(tmp_path, visitor_baskets=pool))


def test_prune_keeps_the_newest_latest_and_protected(tmp_path):
    versions = [_publish(tmp_path, i).name for i in range(5)]  # oldest first; latest = the fifth
    artifact.point_latest(tmp_path, versions[1])  # rolled back to the second
    assert artifact.latest_name(tmp_path) == versions[1]
    (tmp_path / ".tmp-being-published").mkdir()  # a publication in progress is never touched
    assert artifact.prune(tmp_path, 2, dry_run=True) == [versions[0], versions[2]]
    assert artifact.list_versions(tmp_path) == versions  # a dry run removes nothing
    assert artifact.prune(tmp_path, 2, protect=[versions[0]]) == [versions[2]]
    assert artifact.list_versions(tmp_path) == [versions[0], versions[1], versions[3], versions[4]]
    assert (tmp_path / ".tmp-being-published").is_dir()
    assert not any(p.name.startswith(".pruned-") for p in tmp_path.iterdir())
    assert artifact.load(tmp_path).manifest.version == versions[1]  # latest still loads
    assert artifact.prune(tmp_path, 1) == [versions[0], versions[3]]
    assert artifact.list_versions(tmp_path) == [versions[1], versions[4]]
    with pytest.raises(InvalidInputError, match="--keep 0"):
        artifact.prune(tmp_path, 0)
