"""Exception types raised on bad input. Each message names the problem and, where possible, the fix."""


class RepanaError(Exception):
    """Base class of every error repana raises on purpose."""


class InputError(RepanaError, ValueError):
    """Arrays or arguments that a function cannot work with (shape, NaN, too few datapoints...)."""


class DataError(RepanaError):
    """A dataset that is missing, corrupt, or in an unexpected layout."""


class ChecksumError(DataError):
    """A file whose checksum does not match the expected one."""


class CheckpointError(RepanaError):
    """A checkpoint that is truncated, corrupt, or from another architecture or version."""


class ConfigError(RepanaError, ValueError):
    """A configuration with unknown keys or impossible values."""


class ConfigWarning(UserWarning):
    """A configuration that runs, but not entirely as written (the warning says what changed)."""
