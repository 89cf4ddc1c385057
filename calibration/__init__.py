"""Turning a stream of scores into thresholds and flags (rolling quantile, SPOT/DSPOT), per key.

Knows nothing of models or Kafka, and never imports TensorFlow.
"""
