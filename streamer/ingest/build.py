"""What turns input records into the model's windows: the codec, and for readings input the
windower (``[codec].input``), built the same way by the daemon, backtests and a model swap."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from streamer.config import TandemConfig
from streamer.errors import ConfigError
from streamer.ingest.codec import Codec, Limits, make_codec
from streamer.ingest.features import FeatureLayout
from streamer.ingest.readings import Windower


def build_input(
    feature_names: Sequence[str], config: TandemConfig
) -> tuple[Codec, Windower | None]:
    """The codec for a model with ``feature_names`` (D,), and the windower when ``[codec].input``
    is ``readings`` (a ``ConfigError`` unless the model was trained on a series cut with
    ``--window``: only then are its windows W readings of named channels)."""
    codec = config.codec
    if codec.input == "windows":
        return make_codec(codec.format, Limits.of(feature_names, codec)), None
    layout = FeatureLayout.of(feature_names)
    if not layout.channels:
        raise ConfigError(
            '[codec].input = "readings" needs a model trained on a series cut with --window '
            "(its features named channel[t-k]); this model's features are not steps of channels"
        )
    limits = replace(
        Limits.of(layout.channels, codec),
        keep_missing=codec.missing == "fill-previous",
        readings=True,
    )
    windower = Windower(
        layout.steps,
        layout.channels,
        codec.stride,
        codec.max_gap_ms,
        fill_previous=codec.missing == "fill-previous",
        max_keys=config.calibration.max_keys,
    )
    return make_codec(codec.format, limits, readings=True), windower
