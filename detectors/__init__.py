"""Autoencoders, the cascaded two-autoencoder detector, scoring and model bundles.

Knows nothing of Kafka, files or thresholds: windows in (n, D) float32, scores out.
"""
