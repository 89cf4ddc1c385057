"""Dense autoencoders in Keras 3 (``keras.layers`` and ``keras.ops`` only, any backend).

An autoencoder is a functional model ``encoder → decoder`` whose two halves are nested models
named ``encoder`` and ``decoder``, so the latent code stays reachable after a save/load round trip
(``encoder_of(model)``); the seed article's ``autoencoder1.encoder`` attribute does not exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import structlog
from numpy.typing import NDArray

from detectors.spec import AutoencoderSpec

log = structlog.get_logger(__name__)


def build_autoencoder(spec: AutoencoderSpec, input_dim: int, name: str) -> keras.Model:
    """An autoencoder for (batch, ``input_dim``) inputs with a (batch, ``spec.latent``) code.

    Hidden layers use ``spec.activation`` and optional dropout; the code layer and the output
    layer are linear, so codes and reconstructions are unbounded like scaled data.
    """
    if spec.latent >= input_dim:
        raise ValueError(
            f"{name}: latent width {spec.latent} must be below the input width {input_dim}"
        )
    inputs = keras.Input((input_dim,), name=f"{name}_input")
    hidden = inputs
    for i, width in enumerate(spec.hidden):
        hidden = keras.layers.Dense(width, activation=spec.activation, name=f"enc_{i}")(hidden)
        if spec.dropout:
            hidden = keras.layers.Dropout(spec.dropout, name=f"enc_drop_{i}")(hidden)
    code = keras.layers.Dense(spec.latent, name="code")(hidden)
    encoder = keras.Model(inputs, code, name="encoder")

    code_in = keras.Input((spec.latent,), name=f"{name}_code")
    hidden = code_in
    for i, width in enumerate(reversed(spec.hidden)):
        hidden = keras.layers.Dense(width, activation=spec.activation, name=f"dec_{i}")(hidden)
        if spec.dropout:
            hidden = keras.layers.Dropout(spec.dropout, name=f"dec_drop_{i}")(hidden)
    reconstruction = keras.layers.Dense(input_dim, name="reconstruction")(hidden)
    decoder = keras.Model(code_in, reconstruction, name="decoder")

    outer = keras.Input((input_dim,), name=f"{name}_window")
    return keras.Model(outer, decoder(encoder(outer)), name=name)


def encoder_of(autoencoder: keras.Model) -> keras.Model:
    """The nested encoder sub-model: (batch, D) → (batch, latent)."""
    return autoencoder.get_layer("encoder")


def decoder_of(autoencoder: keras.Model) -> keras.Model:
    return autoencoder.get_layer("decoder")


@dataclass(frozen=True)
class TrainingResult:
    """How one autoencoder's training went; losses are mean squared errors in scaled units."""

    epochs_run: int
    best_epoch: int
    train_loss: float
    val_loss: float

    @classmethod
    def from_history(cls, losses: Mapping[str, Sequence[float]]) -> TrainingResult:
        """The best epoch of a Keras ``History.history``: ``loss`` and ``val_loss`` per epoch;
        early stopping restored that epoch's weights."""
        val_losses = losses["val_loss"]
        best = int(np.argmin(val_losses))
        return cls(
            epochs_run=len(val_losses),
            best_epoch=best + 1,
            train_loss=float(losses["loss"][best]),
            val_loss=float(val_losses[best]),
        )


def train_autoencoder(
    autoencoder: keras.Model,
    train: NDArray[np.float32],
    validation: NDArray[np.float32],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainingResult:
    """Fit to reconstruct ``train`` (n, D), stopping early on ``validation`` loss and keeping the
    best epoch's weights."""
    autoencoder.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )
    history = autoencoder.fit(
        train,
        train,
        validation_data=(validation, validation),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[stopper, *callbacks],
    )
    result = TrainingResult.from_history(history.history)
    log.info("autoencoder_trained", model=autoencoder.name, **result.__dict__)
    return result
