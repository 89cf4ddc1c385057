"""The detector on the other Keras backend: a bundle trained under TensorFlow scores the same
under JAX, through the JAX branch of the compiled path (``jax.jit`` over ``stateless_call``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from detectors.cascade import CascadeDetector
from tests.detectors.conftest import Labelled

SCORE_UNDER_JAX = """
import sys, numpy as np, keras
assert keras.backend.backend() == "jax", keras.backend.backend()
from detectors.cascade import CascadeDetector
bundle, windows, out = sys.argv[1:4]
detector = CascadeDetector.load(bundle, device="cpu")
scores = detector.score(np.load(windows))
np.save(out, np.stack([scores.score, scores.contributions()[:, 0]]))
print(detector._compiled.device.backend, detector._compiled.traces)
"""


def test_a_tensorflow_bundle_scores_the_same_under_jax(
    trained: CascadeDetector, labelled: Labelled, tmp_path: Path
) -> None:
    windows = labelled.test.windows[:5000]
    trained.save(tmp_path / "bundle")
    np.save(tmp_path / "windows.npy", windows)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = [str(tmp_path / p) for p in ("bundle", "windows.npy", "jax.npy")]
    result = subprocess.run(
        [sys.executable, "-c", SCORE_UNDER_JAX, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    backend, traces = result.stdout.split()[-2:]
    assert backend == "jax" and int(traces) <= 6
    under_jax = np.load(tmp_path / "jax.npy")
    reference = trained.score(windows)
    np.testing.assert_allclose(under_jax[0], reference.score, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(under_jax[1], reference.contributions()[:, 0], rtol=1e-4, atol=1e-5)
