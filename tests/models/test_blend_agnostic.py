"""The stage-agnostic blend an experiment compares the per-stage blend with."""

import numpy as np

from models.blend import FEATURE_NAMES, BlendWeights, StageBlend, stage_agnostic_weights
from models.domain import STAGES


def test_stage_agnostic_weights_pooled_fit_or_positives_weighted_average() -> None:
    f0, f1 = FEATURE_NAMES[0], FEATURE_NAMES[1]
    stages = [
        StageBlend(s.value, {f0: float(i), f1: 1.0}, positives=[300, 100, 0, 0, 0][i], fitted_on="stage")
        for i, s in enumerate(STAGES)
    ]
    # an older model without the pooled fit: (300 * 0 + 100 * 1) / 400 for f0
    w = stage_agnostic_weights(BlendWeights(stages))
    assert w.shape == (len(STAGES), len(FEATURE_NAMES))
    assert w.dtype == np.float32
    assert np.allclose(w, w[0])
    assert w[0, 0] == 0.25
    assert w[0, 1] == 1.0
    assert w[0, 2] == 0.0
    # the pooled fit when the model kept it (a feature it lacks weighs 0)
    pooled = stage_agnostic_weights(BlendWeights(stages, pooled={f0: 2.0}))
    assert pooled[3, 0] == 2.0
    assert pooled[3, 1] == 0.0
