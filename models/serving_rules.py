"""Constants of the blend features and of the request path, named once and stored with every model.

``ServingRules`` travels in the model manifest as ``JourneyRules`` does: training computes the blend
features with the manifest's windows and serving reads the same values back, so the two cannot drift.
A manifest written without it loads with the defaults below.
"""

from __future__ import annotations

import math

import msgspec

from models.domain import Stage
from models.tifu import TifuParams


class ServingRules(msgspec.Struct, frozen=True, kw_only=True):
    """Defaults are the documented ones.

    Feature windows (training's ``blend.sparse_features`` and serving's ``LiveProfile.features``):
    bought_recency_days          bought_recency is exp(-days since the last purchase / this) (30)
    touch_recency_days           touch_recency is exp(-days since the last event on the item / this) (7)
    complement_recency_days      a bought item anchors complements with weight exp(-age / this) (60)
    similar_recency_days         a touched item anchors similar items with weight exp(-age / this) (30)
    substitute_recency_days      a bought item makes the other one-off items of its category substitutes with
                                 weight exp(-age / this) x (1 - its rebuy rate: ``ItemTables.rebuy_rate``)
                                 (``sources.substitute_matrix``) (3)
    substitute_cutoff            retention never serves an item whose substitute value reaches this: another
                                 kettle within about two days of a kettle whose buyers rarely buy another
                                 (0.5; the value is at most 1; training and evaluation apply it too)
    basket_group_size            the basket-frequency source (``models.tifu``, TIFU-KNN's personal vector
    basket_within_decay          over the visitor's purchase days, the latest first): days per group (7),
    basket_group_decay           decay per later day within a group (0.9) and per later group (0.7); the
                                 defaults are TIFU-KNN's published ones
    basket_neighbours            the basket-neighbours source: the mean basket-frequency vector of this
                                 many most cosine-similar training visitors (300, TIFU-KNN's default)

    Request path:
    context_weight               weight of the page's anchors (product on screen, cart) added to the
                                 blended score (1.0)
    anchor_threshold             an item the page's anchors relate to by more than this (values in [0, 1])
                                 is reported as similar or complement (0.2)
    recent_for_cold              a visitor the model never saw is represented by the mean of their latest
                                 this many items (10)
    content_category_bonus       content in the categories of the visitor's latest events (2.0)
    content_stage_bonus          content serving only some stages, over content for every stage (0.5)
    similar_embedding_weight     item-to-item: weight of the embedding cosine next to co-occurrence, for
    complement_embedding_weight  similar items (0.3) and complements (0.05)
    related_min_cosine           item-to-item: an item whose embedding cosine with the anchors reaches this
                                 is reported as similar to them; filler below it, with no co-interest or
                                 co-purchase either, as popular (0.5)
    abandoned_cart_score         retargeting: score of an item left in the cart (3.0)
    browsed_score                retargeting: score of a browsed item (2.0)
    fallback_trending_weight     the fallback's crowd score: log popularity + this x log trending (0.5)
    trending_share               the fallback reports an item as trending when its trending score
                                 reaches this share of the highest one (0.1)
    """

    bought_recency_days: float = 30.0
    touch_recency_days: float = 7.0
    complement_recency_days: float = 60.0
    similar_recency_days: float = 30.0
    substitute_recency_days: float = 3.0
    substitute_cutoff: float = 0.5
    basket_group_size: int = 7
    basket_within_decay: float = 0.9
    basket_group_decay: float = 0.7
    basket_neighbours: int = 300
    context_weight: float = 1.0
    anchor_threshold: float = 0.2
    recent_for_cold: int = 10
    content_category_bonus: float = 2.0
    content_stage_bonus: float = 0.5
    similar_embedding_weight: float = 0.3
    complement_embedding_weight: float = 0.05
    related_min_cosine: float = 0.5
    abandoned_cart_score: float = 3.0
    browsed_score: float = 2.0
    fallback_trending_weight: float = 0.5
    trending_share: float = 0.1

    def __post_init__(self) -> None:
        for name in (
            "bought_recency_days",
            "touch_recency_days",
            "complement_recency_days",
            "similar_recency_days",
            "substitute_recency_days",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"ServingRules.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.substitute_cutoff <= 1.0:
            raise ValueError(
                f"ServingRules.substitute_cutoff must be in (0, 1], got {self.substitute_cutoff}"
            )
        for name in ("basket_within_decay", "basket_group_decay"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"ServingRules.{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("basket_group_size", "basket_neighbours"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServingRules.{name} must be >= 1, got {getattr(self, name)}")
        if self.recent_for_cold < 1:
            raise ValueError(f"ServingRules.recent_for_cold must be >= 1, got {self.recent_for_cold}")

    @property
    def basket_params(self) -> TifuParams:
        """The basket sources' settings as ``TifuParams`` (alpha unused: the blend weighs the two)."""
        return TifuParams(
            neighbours=self.basket_neighbours,
            within_decay=self.basket_within_decay,
            group_decay=self.basket_group_decay,
            group_size=self.basket_group_size,
        )


DEFAULT_SERVING = ServingRules()


class Exploration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Exploration: a share of each stage's product slots kept for items no one has interacted with yet
    (the live catalog's new items, ``Recommender.with_overlay``), flagged ``exploration`` in the answer.

    Off unless configured: a shop's policy, switched without retraining, so the service passes it from
    its settings to ``with_overlay`` rather than storing it with the model as ``ServingRules``.

    shares  stage -> share of the ``k`` product slots in [0, 1] (a stage left out: none)
    """

    shares: dict[Stage, float] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for stage, share in self.shares.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"Exploration share of {stage.value} must be in [0, 1], got {share}")

    def slots(self, stage: Stage, k: int) -> int:
        """How many of ``k`` slots go to new items at ``stage``: share x k, rounded half up."""
        return min(k, math.floor(self.shares.get(stage, 0.0) * k + 0.5))
