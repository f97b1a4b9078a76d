"""Error types. The CLI turns any MedUnlearnError into one red line and exit code 2."""
from __future__ import annotations


class MedUnlearnError(Exception):
    """Base class for every error medunlearn raises on bad input or a failed run."""


class ConfigError(MedUnlearnError):
    """A configuration, option or rule is malformed or names something unknown."""


class DataError(MedUnlearnError):
    """Input data is missing, corrupt, empty, or does not match what was asked."""


class CheckpointError(MedUnlearnError):
    """A checkpoint is missing, corrupt, unsafe, or incompatible."""


class SelectionError(DataError):
    """A forget rule selects nothing, or everything."""


class DivergenceError(MedUnlearnError):
    """An optimisation produced non-finite losses or weights."""


class OutputExistsError(MedUnlearnError):
    """An output already exists and --overwrite was not given."""


class OutputLockedError(MedUnlearnError):
    """Another run is writing the same output right now."""
