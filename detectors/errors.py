"""Errors raised by the detectors package; messages say what is wrong and what to do about it."""


class DetectorError(Exception):
    """A detector was asked for something it cannot do (bad training data, no GPU, …)."""


class NotFittedError(DetectorError):
    """``score`` or ``save`` before ``fit`` (or ``load``)."""


class BundleError(DetectorError):
    """A model bundle is missing a file, was modified, or does not fit the stream it is used on."""
