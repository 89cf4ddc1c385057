"""The pre-trained autoencoders a fusion detector is built from, and the features each reads.

A member is an autoencoder someone already trusts, trained on a subset of the stream's
features (say the price channels, or one group of sensors). It comes from a cascade bundle
(``tandem train`` on those features: its AE1, its scaler and its feature names) or from a
Keras ``.keras`` file with the names of the features it reads. A ``.keras`` member must keep
its halves as nested models named ``encoder`` and ``decoder`` (``build_autoencoder``'s layout):
the code is read from the encoder's output, not from a guessed layer index, which is how the
seed article's late-fusion example came to take the wrong layer. It reads the features as they
arrive, so scaling the member needs must be part of the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from numpy.typing import NDArray

from detectors import bundle
from detectors.autoencoder import decoder_of, encoder_of
from detectors.errors import BundleError
from detectors.scaling import FeatureScaler


@dataclass
class Member:
    """One fused autoencoder: ``name`` (its part of the score in ``late`` fusion), the
    ``autoencoder`` ((B, d) → (B, d) with a (B, latent) code), the ``scaler`` of its d inputs,
    and the names of the d stream features it reads, in its own order."""

    name: str
    autoencoder: keras.Model
    scaler: FeatureScaler
    feature_names: tuple[str, ...]
    source: dict[str, Any]
    """Where it came from: ``{"path", "version"}`` (version for bundles)."""

    @property
    def latent_width(self) -> int:
        return int(encoder_of(self.autoencoder).output_shape[-1])

    @property
    def input_width(self) -> int:
        return len(self.feature_names)

    def indices_in(self, stream_names: Sequence[str]) -> NDArray[np.intp]:
        """(d,) positions of this member's features in a window of ``stream_names`` (D,).

        Raises ``BundleError`` naming the first feature the stream does not carry."""
        position = {name: i for i, name in enumerate(stream_names)}
        missing = [name for name in self.feature_names if name not in position]
        if missing:
            raise BundleError(
                f"member {self.name!r} reads feature {missing[0]!r}"
                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}, which the "
                f"stream's windows do not carry; they carry {_preview(stream_names)}"
            )
        return np.array([position[name] for name in self.feature_names], dtype=np.intp)


def load_member(
    name: str, path: Path, features: Sequence[str] | None, stream_names: Sequence[str]
) -> Member:
    """A member from a cascade bundle directory (its AE1; ``features`` must be None or its own
    feature names) or a ``.keras`` file (``features`` required: patterns as
    ``select_features`` reads them, against the stream's ``stream_names``)."""
    path = Path(path)
    if path.is_dir():
        manifest = bundle.read_manifest(path)
        if manifest.get("kind") != "cascade":
            raise BundleError(
                f"member {name!r}: {path} holds a {manifest.get('kind')!r} detector; a member is "
                "a cascade bundle (its AE1 is fused) or a .keras autoencoder"
            )
        own = tuple(manifest["feature_names"])
        if features and tuple(select_features(stream_names, features)) != own:
            raise BundleError(
                f"member {name!r}: {path} was trained on its own features ({_preview(own)}); "
                "leave out the feature list for a bundle"
            )
        member = Member(
            name,
            bundle.load_model(path, "ae1"),
            FeatureScaler.from_dict(manifest["scaler"]),
            own,
            {"path": str(path), "version": manifest["version"]},
        )
    elif path.suffix == ".keras" and path.is_file():
        if not features:
            raise BundleError(
                f"member {name!r}: {path} is a .keras file; name the features it reads "
                "(NAME=FILE.keras@feature,feature,... or channel names)"
            )
        names = tuple(select_features(stream_names, features))
        member = Member(
            name, _load_keras(name, path), _identity(len(names)), names, {"path": str(path)}
        )
    else:
        raise BundleError(f"member {name!r}: {path} is neither a model bundle nor a .keras file")
    check_member(member)
    member.indices_in(stream_names)
    return member


def select_features(stream_names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The stream's feature names that ``wanted`` asks for, in the stream's order.

    Each entry of ``wanted`` is a feature name (``price[t-3]``) or a channel name (``price``),
    which selects every window step of that channel (``price[t-15]`` … ``price[t-0]``).
    """
    chosen: set[str] = set()
    for entry in wanted:
        matched = {n for n in stream_names if n == entry or n.startswith(f"{entry}[t-")}
        if not matched:
            raise BundleError(
                f"feature or channel {entry!r} is not among the stream's features "
                f"({_preview(stream_names)})"
            )
        chosen |= matched
    return [name for name in stream_names if name in chosen]


def check_member(member: Member) -> None:
    """Raise ``BundleError`` unless the member is an autoencoder of its features' width."""
    model = member.autoencoder
    width = int(model.input_shape[-1])
    if width != member.input_width:
        raise BundleError(
            f"member {member.name!r} reads {member.input_width} features but its autoencoder "
            f"takes {width} inputs"
        )
    if int(decoder_of(model).output_shape[-1]) != width:
        raise BundleError(f"member {member.name!r}: its decoder does not reconstruct its input")


def _load_keras(name: str, path: Path) -> keras.Model:
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError, OSError) as error:
        raise BundleError(f"member {name!r}: {path} cannot be loaded safely: {error}") from None
    layers = {layer.name for layer in model.layers}
    if not {"encoder", "decoder"} <= layers:
        raise BundleError(
            f"member {name!r}: {path} has no nested 'encoder' and 'decoder' models (it has "
            f"{_preview(sorted(layers))}); build it as encoder → decoder sub-models so its code "
            "can be read"
        )
    return model


def _identity(width: int) -> FeatureScaler:
    return FeatureScaler("none", np.zeros(width, np.float32), np.ones(width, np.float32))


def _preview(names: Sequence[str], shown: int = 6) -> str:
    head = ", ".join(repr(n) for n in list(names)[:shown])
    return head + (f" … {len(names)} in all" if len(names) > shown else "")
