"""Hyperparameters of the detectors, as frozen validated models that import no Keras.

The CLI reads them from the ``[train]`` section of a config file; the bundle stores them, so a
loaded model says exactly how it was built.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

DETECTOR_KINDS = ("cascade", "fusion-concat", "fusion-weighted", "fusion-late")
"""What ``tandem train --detector`` builds; a bundle's ``kind`` is one of them."""

Activation = Literal["relu", "elu", "gelu", "tanh", "selu", "swish", "linear"]


class AutoencoderSpec(BaseModel):
    """A dense autoencoder: ``hidden`` widths from the input down to ``latent``; the decoder mirrors
    them. ``linear`` on a single layer gives PCA-like behaviour."""

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


class CascadeSpec(TrainingSpec):
    """The cascade: AE1 on the scaled window (D → ``ae1.latent``), AE2 on AE1's code
    (``ae1.latent`` → ``ae2.latent``), and how they are trained and their errors combined.

    ``weights`` multiply the two stages' tail decades (AE1, AE2) in the combined score; with
    unit weights the score is Fisher's combination of their tail probabilities, in decades.
    """

    ae1: AutoencoderSpec = AutoencoderSpec(hidden=(32,), latent=16)
    ae2: AutoencoderSpec = AutoencoderSpec(hidden=(8,), latent=4)
    weights: tuple[Annotated[float, Field(ge=0.0)], Annotated[float, Field(ge=0.0)]] = (1.0, 1.0)

    @model_validator(mode="after")
    def _cascade_fits(self) -> Self:
        if self.ae2.latent >= self.ae1.latent:
            raise ValueError(
                f"ae2.latent ({self.ae2.latent}) must be below ae1.latent ({self.ae1.latent}): "
                "AE2 compresses AE1's code"
            )
        if sum(self.weights) <= 0:
            raise ValueError("at least one of the two weights must be positive")
        return self


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
