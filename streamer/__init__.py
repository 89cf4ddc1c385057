"""Kafka in, alerts out: a small core every way of running shares (config, logging, errors,
records, codec, alerts, checkpoints, the run loop, metrics) and a wing per way of running it:
``cli``, ``broker`` (the Kafka edges and the daemon), ``backtest`` and ``demo``.

Depends on ``detectors`` and ``calibration``; neither of them depends on this package. The import
rules are in ``.importlinter`` and docs/design.md.
"""
