"""One exception hierarchy for ctpipe.

Every message names the bad thing and, where there is one, the fix. The CLI turns these into
one line on stderr and a documented exit code (see pipeline/cli.py).
"""


from typing import Optional, Type, TypeVar

E = TypeVar("E", bound=BaseException)


def find_in_chain(exc: BaseException, cls: Type[E]) -> Optional[E]:
    """The first exception of type ``cls`` in ``exc``'s cause/context chain (runners such as Beam's
    re-raise a worker's error wrapped in their own), or None."""
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, cls):
            return current
        current = current.__cause__ or current.__context__
    return None


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
