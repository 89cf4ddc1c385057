"""Errors raised by the calibration package."""


class CalibrationError(Exception):
    """A calibrator was configured or called in a way it cannot honour."""


class SnapshotError(CalibrationError):
    """A snapshot cannot be restored: corrupt, another method, or another format version."""
