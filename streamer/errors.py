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


class MissingFileError(ConfigError):
    """A file the command was told to read does not exist. A usage error like a bad option
    (exit status 2), not a failure of the command; the message names the path."""


class BrokerUnavailableError(TandemError):
    """No broker answered in time. Retriable: the cluster may come back."""

    retriable = True


class AuthenticationError(TandemError):
    """The broker refused the client's credentials. Not retriable: a person must fix them
    (exit status 4, where an unreachable broker is 3)."""


class TopicError(TandemError):
    """A topic could not be created, described or deleted."""


class FetchProcessError(TandemError):
    """The daemon's fetch process (``streamer.broker.fetcher``) exited or stopped answering.
    Fatal: the daemon stops (exit status 1) and its supervisor starts it again."""


class LabelError(TandemError):
    """Labels or a file of labelled time ranges cannot be used; the message names the file, the
    column or entry, and the row."""


class ReplayError(TandemError):
    """Windows were not acknowledged, or a topic could not be read back in time."""


class TableError(TandemError):
    """A data file cannot be read as windows; the message names the file and the column."""


class NabError(TandemError):
    """Rows or windows cannot be scored as NAB does; the message says which and why."""


class DemoError(TandemError):
    """A step of the demo could not be done (the message says which and why)."""


class StopRequestedError(Exception):
    """A stop request (SIGTERM, SIGINT) came while the daemon was still starting, waiting for
    the broker or the input topic. Raised to unwind what start-up began; not a failure: the
    daemon exits 0."""


class DaemonGoneError(Exception):
    """The daemon's end of the pipe closed: it exited or was killed."""


class DeliveryError(TandemError):
    """The broker did not acknowledge records; nothing of their batch may be committed."""

    retriable = True


class EventStateError(TandemError):
    """A checkpoint's alert-event state cannot be read."""
