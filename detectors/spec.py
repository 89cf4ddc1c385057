"""Hyperparameters of the detectors, as frozen validated models that import no Keras.

The CLI reads them from the ``[train]`` section of a config file; the bundle stores them, so a
loaded model says exactly how it was built.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from detectors.errors import DetectorError

DETECTOR_KINDS = ("cascade", "fusion-concat", "fusion-weighted", "fusion-late")
"""What ``tandem train --detector`` builds; a bundle's ``kind`` is one of them."""

Activation = Literal["relu", "elu", "gelu", "tanh", "selu", "swish", "linear"]


class AutoencoderSpec(BaseModel):
    """A dense autoencoder: ``hidden`` widths from the input down to ``latent``; the decoder mirrors
    them. ``linear`` on a single layer gives PCA-like behaviour. Every size is set: this is what
    ``build_autoencoder`` builds (the cascade's configured stages are ``CascadeStageSpec``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hidden: tuple[Annotated[int, Field(ge=1)], ...] = (32,)
    latent: Annotated[int, Field(ge=1)] = 16
    activation: Activation = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class TrainingSpec(BaseModel):
    """How a detector's trainable models are fitted, shared by every detector kind.

    ``validation_fraction`` is the chronologically last share of the training windows, used for
    early stopping and to fit the error normalisation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    scaler: Literal["robust", "standard"] = "robust"
    epochs: Annotated[int, Field(ge=1)] = 100
    batch_size: Annotated[int, Field(ge=1)] = 256
    learning_rate: Annotated[float, Field(gt=0.0)] = 1e-3
    validation_fraction: Annotated[float, Field(gt=0.0, lt=0.9)] = 0.2
    patience: Annotated[int, Field(ge=1)] = 8
    seed: int = 0


MIN_CASCADE_WIDTH = 3
"""The narrowest window the cascade takes: AE1 needs a code L < D and AE2 one K < L, K ≥ 1."""
AE1_LATENT_RANGE = (4, 16)
AE2_MIN_LATENT = 2


def ae1_latent_for(width: int) -> int:
    """AE1's code width L for windows of D = ``width`` features: ⌊3D/8⌋ kept within
    ``AE1_LATENT_RANGE`` (``bench/eval_detection.py``'s cascade), and below D for tiny windows
    (D = 3, 4 → 2, 3). D ≤ 2 leaves AE2 no narrower code: ``MIN_CASCADE_WIDTH``."""
    low, high = AE1_LATENT_RANGE
    return min(high, max(low, 3 * width // 8), width - 1)


def ae2_latent_for(ae1_latent: int) -> int:
    """AE2's code width K for AE1's code of L = ``ae1_latent``: ⌊L/4⌋, at least
    ``AE2_MIN_LATENT``, and below L (L = 2 → 1). Less than 1 when L < 2: no AE2 fits."""
    return min(max(AE2_MIN_LATENT, ae1_latent // 4), ae1_latent - 1)


class CascadeStageSpec(BaseModel):
    """One of the cascade's autoencoders as configured (``[train.ae1]``, ``[train.ae2]``).

    ``hidden`` and ``latent`` may be left unset (None): ``CascadeSpec.sized_for`` then sizes them
    from the window width D, which only training knows. Unset sizes are left out of dumps (a TOML
    file cannot hold None). An ``AutoencoderSpec`` is accepted in its place.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    hidden: tuple[Annotated[int, Field(ge=1)], ...] | None = None
    latent: Annotated[int, Field(ge=1)] | None = None
    activation: Activation = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0

    @model_validator(mode="before")
    @classmethod
    def _from_autoencoder_spec(cls, data: Any) -> Any:
        return data.model_dump() if isinstance(data, AutoencoderSpec) else data

    @model_serializer(mode="wrap")
    def _without_unset_sizes(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        return {key: value for key, value in dumped.items() if value is not None}

    def sized(self, hidden: tuple[int, ...], latent: int) -> AutoencoderSpec:
        """The concrete autoencoder: this stage's own sizes where set, else ``hidden`` and
        ``latent``."""
        return AutoencoderSpec(
            hidden=self.hidden if self.hidden is not None else hidden,
            latent=self.latent if self.latent is not None else latent,
            activation=self.activation,
            dropout=self.dropout,
        )


class CascadeSpec(TrainingSpec):
    """The cascade: AE1 on the scaled window (D → ``ae1.latent``), AE2 on AE1's code
    (``ae1.latent`` → ``ae2.latent``), and how they are trained and their errors combined.

    Sizes left unset follow D when the cascade is trained (``sized_for``): AE1 D → 2L → L with
    L = ``ae1_latent_for(D)``, AE2 L → 2K → K with K = ``ae2_latent_for(L)``; D ≥ 43 gives
    32 → 16 and 8 → 4. A fitted detector's spec, and its bundle, hold the sizes it was built with.

    ``weights`` multiply the two stages' tail decades (AE1, AE2) in the combined score; with
    unit weights the score is Fisher's combination of their tail probabilities, in decades.
    """

    ae1: CascadeStageSpec = CascadeStageSpec()
    ae2: CascadeStageSpec = CascadeStageSpec()
    weights: tuple[Annotated[float, Field(ge=0.0)], Annotated[float, Field(ge=0.0)]] = (1.0, 1.0)

    @model_validator(mode="after")
    def _cascade_fits(self) -> Self:
        latent1, latent2 = self.ae1.latent, self.ae2.latent
        if latent1 is not None and latent2 is not None and latent2 >= latent1:
            raise ValueError(
                f"ae2.latent ({latent2}) must be below ae1.latent ({latent1}): "
                "AE2 compresses AE1's code"
            )
        if sum(self.weights) <= 0:
            raise ValueError("at least one of the two weights must be positive")
        return self

    def autoencoders(self, width: int) -> tuple[AutoencoderSpec, AutoencoderSpec]:
        """AE1's and AE2's concrete specs for windows of D = ``width`` features: the sizes set
        here, the rest by the rule (class docstring). A ``DetectorError`` naming the field and D
        when they do not fit: every code must be narrower than the input it compresses."""
        if width < MIN_CASCADE_WIDTH:
            raise DetectorError(
                f"windows of {width} features are too narrow for the cascade: AE1 compresses "
                f"them to a narrower code and AE2 that code to a narrower one, so it needs at "
                f"least {MIN_CASCADE_WIDTH}; lengthen the window or add channels"
            )
        latent1 = self.ae1.latent if self.ae1.latent is not None else ae1_latent_for(width)
        if latent1 >= width:
            raise DetectorError(
                f"ae1.latent ({latent1}) must be below the window length ({width} features); "
                "leave [train.ae1] latent unset to size it from the window, or lengthen the window"
            )
        latent2 = self.ae2.latent if self.ae2.latent is not None else ae2_latent_for(latent1)
        if not 1 <= latent2 < latent1:
            raise DetectorError(_ae2_too_wide(latent2, latent1, self.ae1.latent is None, width))
        return (
            self.ae1.sized((2 * latent1,), latent1),
            self.ae2.sized((2 * latent2,), latent2),
        )

    def sized_for(self, width: int) -> CascadeSpec:
        """This spec with every size set, for windows of D = ``width`` features
        (``autoencoders``): what a fitted cascade records."""
        ae1, ae2 = self.autoencoders(width)
        return CascadeSpec.model_validate(
            {**self.model_dump(), "ae1": ae1.model_dump(), "ae2": ae2.model_dump()}
        )


def _ae2_too_wide(latent2: int, latent1: int, ae1_from_rule: bool, width: int) -> str:
    """Why AE2's code width ``latent2`` does not fit AE1's code ``latent1`` (D = ``width``)."""
    if ae1_from_rule:
        return (
            f"ae2.latent ({latent2}) must be below ae1.latent ({latent1}, sized from the window "
            f"length of {width} features); lower it, or set [train.ae1] latent above it"
        )
    if latent2 < 1:
        return f"ae1.latent ({latent1}) leaves no narrower code for AE2: set it to 2 or more"
    return f"ae2.latent ({latent2}) must be below ae1.latent ({latent1}): AE2 compresses its code"


FusionMode = Literal["concat", "weighted", "late"]


class FusionSpec(TrainingSpec):
    """How two pre-trained autoencoders (members) are fused (``detectors.fusion``).

    - ``mode``: ``concat`` (both codes, concatenated, feed the head), ``weighted`` (codes
      projected to ``width`` and averaged with ``weights``, or with learned softmax weights when
      ``weights`` is None), ``late`` (each member's own decoder reconstructs its features; the
      head reconstructs the whole window from both reconstructions).
    - ``head``: hidden widths of the trainable head that reconstructs the whole scaled window.
    - ``width``: the common width of ``weighted``'s projections (default: the wider code);
      ``project = false`` averages the codes as they are, which needs equal code widths.
    - ``freeze_members``: keep the members' weights as given (the default); false fine-tunes
      them with the head on the whole window's reconstruction.
    """

    mode: FusionMode = "concat"
    head: tuple[Annotated[int, Field(ge=1)], ...] = (64,)
    width: Annotated[int, Field(ge=1)] | None = None
    project: bool = True
    weights: tuple[Annotated[float, Field(ge=0.0)], Annotated[float, Field(ge=0.0)]] | None = None
    freeze_members: bool = True
    activation: Activation = "relu"

    @model_validator(mode="after")
    def _fusion_fits(self) -> Self:
        if self.weights is not None and sum(self.weights) <= 0:
            raise ValueError("at least one of the two fusion weights must be positive")
        if self.mode != "weighted" and (self.weights is not None or self.width is not None):
            raise ValueError(f"weights and width apply to mode 'weighted', not {self.mode!r}")
        return self
