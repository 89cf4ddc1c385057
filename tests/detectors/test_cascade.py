"""Conformance of the cascade detector: shapes, detection quality, the AE2 path, determinism,
batch independence, no retracing, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from detectors.autoencoder import encoder_of
from detectors.cascade import CascadeDetector
from detectors.errors import DetectorError, NotFittedError
from detectors.normalise import tail_decades
from detectors.spec import AutoencoderSpec, CascadeSpec, CascadeStageSpec
from streamer.demo.synthetic import ANOMALY_KINDS
from tests.detectors.conftest import Labelled

# Measured on this dataset at the time of writing: overall 0.96; spike 1.00, level_shift 1.00,
# frozen 0.83, correlation_break 0.92. Floors sit a little below to absorb platform noise.
AUC_FLOORS = {
    "all": 0.93,
    "spike": 0.98,
    "level_shift": 0.98,
    "frozen": 0.75,
    "correlation_break": 0.87,
}


SMALL = CascadeSpec(
    ae1=AutoencoderSpec(latent=4), ae2=AutoencoderSpec(hidden=(), latent=2), epochs=2
)


def test_scores_have_the_documented_shapes(trained: CascadeDetector, labelled: Labelled) -> None:
    windows = labelled.test.windows[:777]
    scores = trained.score(windows)
    assert scores.score.shape == (777,) and scores.score.dtype == np.float32
    assert set(scores.parts) == set(scores.errors) == {"ae1", "ae2"}
    np.testing.assert_allclose(scores.score, scores.parts["ae1"] + scores.parts["ae2"], rtol=1e-6)
    blame = scores.contributions()
    assert blame.shape == (777, 64)
    np.testing.assert_allclose(blame.sum(axis=1), 1.0, rtol=1e-5)
    assert (blame >= 0).all()
    np.testing.assert_array_equal(scores.contributions([5, 700]), blame[[5, 700]])
    assert (scores.errors["ae1"] >= 0).all() and (scores.errors["ae2"] >= 0).all()
    assert trained.window_length == 64
    assert trained.feature_names[:5] == (
        "ch0[t-15]",
        "ch1[t-15]",
        "ch2[t-15]",
        "ch3[t-15]",
        "ch0[t-14]",
    )


def test_parts_follow_the_documented_rule(trained: CascadeDetector, labelled: Labelled) -> None:
    """part = weight * -log10 P(Z > z), z the log-robust z of the raw error (float64 reference)."""
    scores = trained.score(labelled.test.windows[:2000])
    for part, weight in zip(("ae1", "ae2"), trained.spec.weights, strict=True):
        z = trained.normalisers_[part](scores.errors[part])
        expected = weight * tail_decades(z)
        np.testing.assert_allclose(scores.parts[part], expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kind", ["all", *ANOMALY_KINDS])
def test_roc_auc_floor_per_anomaly_kind(
    trained: CascadeDetector, labelled: Labelled, kind: str
) -> None:
    test = labelled.test
    assert test.labels is not None and test.kinds is not None
    scores = trained.score(test.windows).score
    chosen = (
        np.ones(len(test), bool) if kind == "all" else (test.kinds == kind) | (test.labels == 0)
    )
    assert test.labels[chosen].sum() >= 10, "the dataset should hold enough anomalies of each kind"
    auc = roc_auc_score(test.labels[chosen], scores[chosen])
    assert auc >= AUC_FLOORS[kind], f"{kind}: ROC-AUC {auc:.3f} below {AUC_FLOORS[kind]}"


def test_anomalies_are_blamed_on_the_disturbed_channel(
    trained: CascadeDetector, labelled: Labelled
) -> None:
    test = labelled.test
    spikes = np.flatnonzero(test.kinds == "spike")
    scores = trained.score(test.windows[spikes])
    shares_per_channel = scores.contributions().reshape(len(spikes), 16, 4).sum(axis=1)
    assert (shares_per_channel.max(axis=1) > 0.5).mean() > 0.8, "one channel should carry the blame"


def test_a_window_normal_for_ae1_but_unusual_for_ae2_still_scores_high() -> None:
    """Windows lie on a plane (a linear AE1 reconstructs all of it) with codes on a parabola in it
    (AE2, with a 1-D code, learns the curve). Points on the plane but off the parabola are new
    combinations of familiar features: only AE2 can see them, and the score must."""
    rng = np.random.default_rng(0)
    u, v = np.linalg.qr(rng.normal(size=(8, 2)))[0].T

    def windows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        noise = rng.normal(0, 0.01, size=(len(a), 8))
        return (np.outer(a, u) + np.outer(b, v) + noise).astype(np.float32)

    t = rng.uniform(-1, 1, 2500)
    spec = CascadeSpec(
        ae1=AutoencoderSpec(hidden=(), latent=2, activation="linear"),
        ae2=AutoencoderSpec(hidden=(16, 16), latent=1, activation="tanh"),
        epochs=120,
        patience=15,
        batch_size=128,
        learning_rate=1e-2,
    )
    detector = CascadeDetector(spec).fit(windows(t, t**2))
    t_normal = rng.uniform(-1, 1, 2000)
    normal = detector.score(windows(t_normal, t_normal**2))
    odd = detector.score(windows(np.array([0.0, 0.5, -0.5]), np.array([0.8, -0.3, 0.9])))
    assert (odd.parts["ae1"] <= np.quantile(normal.parts["ae1"], 0.99)).all(), (
        "AE1 finds them normal"
    )
    assert (odd.parts["ae2"] > normal.parts["ae2"].max()).all(), "AE2 finds their codes unusual"
    assert (odd.score > np.quantile(normal.score, 0.999)).all(), "so the combined score is high"


def test_same_seed_same_model(small_windows: np.ndarray) -> None:
    spec = CascadeSpec(
        ae1=AutoencoderSpec(hidden=(8,), latent=4),
        ae2=AutoencoderSpec(hidden=(), latent=2),
        epochs=2,
        seed=11,
    )
    first = CascadeDetector(spec).fit(small_windows).score(small_windows)
    second = CascadeDetector(spec).fit(small_windows).score(small_windows)
    np.testing.assert_array_equal(first.score, second.score)
    other = (
        CascadeDetector(spec.model_copy(update={"seed": 12}))
        .fit(small_windows)
        .score(small_windows)
    )
    assert not np.array_equal(first.score, other.score)


def test_a_window_scores_the_same_alone_or_in_any_batch(
    trained: CascadeDetector, labelled: Labelled
) -> None:
    """Exactly the same, not nearly: a backtest must reproduce the daemon's scores, and the
    daemon's batches depend on timing (``detectors.scoring``'s one bucket)."""
    windows = labelled.test.windows[:5000]
    together = trained.score(windows)
    alone = np.array([trained.score(windows[i : i + 1]).score[0] for i in range(0, 5000, 997)])
    np.testing.assert_array_equal(alone, together.score[::997])
    for start, size in ((0, 64), (7, 100), (100, 600), (3, 4096), (900, 4100)):
        batch = trained.score(windows[start : start + size])
        for name, part in batch.parts.items():
            np.testing.assert_array_equal(
                part, together.parts[name][start : start + size], err_msg=f"{name}, {size} rows"
            )


def test_odd_batch_sizes_never_retrace(trained: CascadeDetector, labelled: Labelled) -> None:
    compiled = trained._compiled
    assert compiled is not None
    sizes = (1, 63, 64, 65, 511, 4096, 4097, 7000, 0)

    def score_all() -> None:
        for size in sizes:
            scores = trained.score(labelled.test.windows[:size])
            assert len(scores) == size
            assert scores.contributions(np.arange(min(size, 3))).shape == (min(size, 3), 64)

    score_all()
    traced = compiled.traces
    assert traced <= 2 * len(compiled.buckets), "at most one trace per bucket per function"
    score_all()
    assert compiled.traces == traced


def test_bad_input_is_refused_with_the_reason(
    trained: CascadeDetector, small_windows: np.ndarray
) -> None:
    with pytest.raises(ValueError, match="window 3 holds a NaN"):
        bad = np.zeros((5, 64), np.float32)
        bad[3, 7] = np.nan
        trained.score(bad)
    with pytest.raises(ValueError, match="windows have 12 features; the detector expects 64"):
        trained.score(small_windows)
    with pytest.raises(ValueError, match="2-D array"):
        trained.score(np.zeros(64, np.float32))


def test_fit_validates_its_data(small_windows: np.ndarray) -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        CascadeDetector().score(small_windows)
    with pytest.raises(DetectorError, match="at least 50 needed"):
        CascadeDetector(SMALL).fit(small_windows[:40])
    with pytest.raises(
        DetectorError, match=r"ae1.latent \(16\) must be below the window length \(12 features\)"
    ):
        CascadeDetector(CascadeSpec(ae1=CascadeStageSpec(latent=16))).fit(small_windows)
    with pytest.raises(DetectorError, match="windows of 2 features are too narrow"):
        CascadeDetector(SMALL).fit(small_windows[:, :2])
    with pytest.raises(DetectorError, match="3 feature names given for windows of 12 features"):
        CascadeDetector(SMALL, feature_names=["a", "b", "c"]).fit(small_windows)


def test_the_default_cascade_trains_on_a_univariate_window_of_16(
    univariate_trained: CascadeDetector, univariate: np.ndarray
) -> None:
    """``tandem train --window 16`` on one series: D = 16 is below the old fixed code of 16,
    so the sizes must come from D (AE1 16 → 12 → 6, AE2 6 → 4 → 2)."""
    detector = univariate_trained
    assert detector.given_spec == CascadeSpec(epochs=2), "the constructor's spec is kept as given"
    assert detector.spec == CascadeSpec(epochs=2).sized_for(16)
    assert (detector.spec.ae1.hidden, detector.spec.ae1.latent) == ((12,), 6)
    assert (detector.spec.ae2.hidden, detector.spec.ae2.latent) == ((4,), 2)
    assert detector.ae1_.output_shape == (None, 16)
    assert encoder_of(detector.ae1_).output_shape == (None, 6)
    assert encoder_of(detector.ae2_).output_shape == (None, 2)
    scores = detector.score(univariate[:100])
    assert scores.score.shape == (100,) and np.isfinite(scores.score).all()


def test_each_fit_sizes_the_given_spec_for_its_own_windows(small_windows: np.ndarray) -> None:
    detector = CascadeDetector(CascadeSpec(epochs=1), device="cpu")
    detector.fit(small_windows[:, :4])
    assert (detector.spec.ae1.latent, detector.spec.ae2.latent) == (3, 2)
    detector.fit(small_windows)
    assert (detector.spec.ae1.latent, detector.spec.ae2.latent) == (4, 2)
    assert detector.window_length == 12
