"""Cascade autoencoder sizes: the window-width rule, explicit sizes winning, and clear refusals.

Pure pydantic, no Keras: the rule is arithmetic and deserves its own checks at the edges
(tiny windows, the caps), as window/index arithmetic does.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from detectors.errors import DetectorError
from detectors.spec import (
    AutoencoderSpec,
    CascadeSpec,
    CascadeStageSpec,
    ae1_latent_for,
    ae2_latent_for,
)


def bench_rule(width: int) -> tuple[tuple[int, ...], int, tuple[int, ...], int]:
    """``bench/eval_detection.py``'s ``cascade_spec`` sizes, written out independently."""
    latent = min(16, max(4, width * 3 // 8))
    inner = max(2, latent // 4)
    return (min(32, 2 * latent),), latent, (2 * inner,), inner


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        (3, ((4,), 2, (2,), 1)),
        (4, ((6,), 3, (4,), 2)),
        (5, ((8,), 4, (4,), 2)),
        (16, ((12,), 6, (4,), 2)),
        (32, ((24,), 12, (6,), 3)),
        (42, ((30,), 15, (6,), 3)),
        (43, ((32,), 16, (8,), 4)),
        (64, ((32,), 16, (8,), 4)),
        (1000, ((32,), 16, (8,), 4)),
    ],
)
def test_unset_sizes_follow_the_window_width(
    width: int, expected: tuple[tuple[int, ...], int, tuple[int, ...], int]
) -> None:
    ae1, ae2 = CascadeSpec().autoencoders(width)
    assert (ae1.hidden, ae1.latent, ae2.hidden, ae2.latent) == expected


@pytest.mark.parametrize("width", range(3, 200))
def test_the_rule_is_the_benchmarks_where_that_fits_and_always_compresses(width: int) -> None:
    ae1, ae2 = CascadeSpec().autoencoders(width)
    assert 1 <= ae2.latent < ae1.latent < width
    if width >= 5:
        assert (ae1.hidden, ae1.latent, ae2.hidden, ae2.latent) == bench_rule(width)
    assert ae1.latent == ae1_latent_for(width) and ae2.latent == ae2_latent_for(ae1.latent)


@pytest.mark.parametrize("width", [0, 1, 2])
def test_windows_too_narrow_for_a_cascade_are_refused(width: int) -> None:
    with pytest.raises(DetectorError, match=f"windows of {width} features are too narrow"):
        CascadeSpec().autoencoders(width)


def test_explicit_sizes_win_and_the_rest_follow_them() -> None:
    spec = CascadeSpec(
        ae1=CascadeStageSpec(latent=10, activation="tanh"), ae2=CascadeStageSpec(hidden=())
    )
    ae1, ae2 = spec.autoencoders(16)
    assert ae1 == AutoencoderSpec(hidden=(20,), latent=10, activation="tanh")
    assert ae2 == AutoencoderSpec(hidden=(), latent=2)
    given = CascadeSpec(
        ae1=AutoencoderSpec(hidden=(48, 24), latent=12), ae2=AutoencoderSpec(hidden=(8,), latent=4)
    )
    assert given.autoencoders(64) == given.autoencoders(16)
    assert given.autoencoders(64)[0] == AutoencoderSpec(hidden=(48, 24), latent=12)


def test_explicit_sizes_that_do_not_fit_the_window_name_the_field_and_the_width() -> None:
    with pytest.raises(
        DetectorError, match=r"ae1\.latent \(16\) must be below the window length \(16 features\)"
    ):
        CascadeSpec(ae1=CascadeStageSpec(latent=16)).autoencoders(16)
    with pytest.raises(
        DetectorError,
        match=r"ae2\.latent \(6\) must be below ae1\.latent \(6, sized from the window length of "
        r"16 features\)",
    ):
        CascadeSpec(ae2=CascadeStageSpec(latent=6)).autoencoders(16)
    with pytest.raises(DetectorError, match=r"ae1\.latent \(1\) leaves no narrower code for AE2"):
        CascadeSpec(ae1=CascadeStageSpec(latent=1)).autoencoders(16)
    with pytest.raises(ValidationError, match=r"ae2\.latent \(4\) must be below ae1\.latent \(4\)"):
        CascadeSpec(ae1=CascadeStageSpec(latent=4), ae2=CascadeStageSpec(latent=4))


def test_sized_for_records_every_size_and_dumps_leave_unset_ones_out() -> None:
    """A fitted cascade's spec (and so its bundle) holds the sizes it was built with; an unsized
    spec dumps without None, which TOML (``tandem config show``) cannot hold."""
    unsized = CascadeSpec(epochs=3, ae2=CascadeStageSpec(activation="tanh"))
    assert unsized.model_dump()["ae1"] == {"activation": "relu", "dropout": 0.0}
    assert CascadeSpec.model_validate(unsized.model_dump()) == unsized
    sized = unsized.sized_for(16)
    assert sized.epochs == 3 and sized.ae2.activation == "tanh"
    assert sized.model_dump(mode="json")["ae1"] == {
        "hidden": [12],
        "latent": 6,
        "activation": "relu",
        "dropout": 0.0,
    }
    assert sized.sized_for(16) == sized, "sizing twice changes nothing"
    assert CascadeSpec.model_validate(sized.model_dump(mode="json")) == sized
