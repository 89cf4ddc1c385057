"""Backtests: the daemon's run loop over finite history, detection metrics, NAB's score and the
report. Imports the core, never the Kafka edges (``streamer.broker``)."""
