"""Turning a stream of scores into thresholds, flags and surprise, globally or per key.

``RollingQuantile`` (exact rolling quantile), ``Spot`` and ``Dspot`` (extreme-value thresholds
for a target false-alarm rate) share one machinery (``calibration.window``): windows of accepted
scores per entity, thresholds refreshed at fixed counts so batching never changes a flag, and
versioned snapshots. Knows nothing of models or Kafka, and never imports TensorFlow.
"""
