"""One exception hierarchy for ctpipe.

Every message names the bad thing and, where there is one, the fix. The CLI turns these into
one line on stderr and a documented exit code (see pipeline/cli.py).
"""


class CtpipeError(Exception):
    """Base class of every error ctpipe raises on purpose."""

    exit_code = 1


class ConfigError(CtpipeError, ValueError):
    """The configuration file or a command-line value is wrong."""

    exit_code = 2


class InputError(CtpipeError):
    """An input (file, glob, topic) is missing, unreadable or corrupt."""

    exit_code = 3


class StorageError(CtpipeError):
    """The storage root holds something unexpected (corrupt manifest, missing schema...)."""

    exit_code = 4


class LockError(CtpipeError):
    """Another ctpipe process holds the lock on this storage root."""

    exit_code = 5


class RegistryError(CtpipeError):
    """The model registry refused an operation."""

    exit_code = 6


class IntegrityError(RegistryError):
    """A stored artifact does not match its recorded checksum."""


class GateRejected(CtpipeError):
    """The evaluation gate did not bless the candidate model (not a crash: a decision)."""

    exit_code = 10
