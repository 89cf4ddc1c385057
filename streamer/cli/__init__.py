"""The ``tandem`` command line: the top layer, the only place that loads configuration, configures
logging and prints."""
