"""Kafka in, alerts out: sources, codecs, batching, sinks, the run loop, config, CLI and logging.

Depends on ``detectors`` and ``calibration``; neither of them depends on this package.
"""
