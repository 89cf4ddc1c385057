"""Errors raised by the streamer package.

Each carries ``retriable``: whether trying the same thing again later can succeed (a broker that is
down) or cannot (a typo in a config file). Expected bad input is never an exception here: a record
that cannot be decoded becomes a dead letter, not an error that unwinds the loop.
"""


class TandemError(Exception):
    """Base class of the errors this package raises on purpose."""

    retriable: bool = False


class ConfigError(TandemError):
    """The configuration is unreadable or invalid; the message names file, key and expected type."""


class BrokerUnavailableError(TandemError):
    """No broker answered in time. Retriable: the cluster may come back."""

    retriable = True


class TopicError(TandemError):
    """A topic could not be created, described or deleted."""


class FetchProcessError(TandemError):
    """The daemon's fetch process (``streamer.broker.fetcher``) exited or stopped answering.
    Fatal: the daemon stops (exit status 1) and its supervisor starts it again."""
