"""One exception hierarchy for ctpipe, and the one table of its exit codes.

Every message names the bad thing and, where there is one, the fix. The CLI (pipeline/cli/)
turns these into one line on stderr and the exit code the error class carries; ``EXIT_CODES``
is the only place the codes and their meanings are written down (every ``--help`` epilog and
the README's table are checked against it).
"""

from typing import Optional, Type, TypeVar

E = TypeVar("E", bound=BaseException)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_INPUT = 3
EXIT_STORAGE = 4
EXIT_LOCKED = 5
EXIT_REGISTRY = 6
EXIT_FENCED = 7
EXIT_UNREACHABLE = 8
EXIT_GATE_REJECTED = 10
EXIT_INCONSISTENT = 11
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "unexpected internal error (a bug: rerun with --debug and report the traceback)",
    EXIT_CONFIG: "bad configuration or command-line value",
    EXIT_INPUT: "input missing, unreadable or corrupt (files; Kafka unreachable, login or TLS refused, topic missing; offsets deleted by retention)",
    EXIT_STORAGE: "storage root holds something unexpected (corrupt manifest, checkpoint, schema...)",
    EXIT_LOCKED: "another ctpipe process holds the storage root's lease, or (`controller --once`) the controller's leader lease (the message names it; --lock-timeout waits longer)",
    EXIT_REGISTRY: "model registry refused the operation (missing version, integrity failure...)",
    EXIT_FENCED: "this process lost the storage root's lease or the controller's leader lease (paused or cut off longer than its TTL): its publish was refused, nothing partial is visible; rerun",
    EXIT_UNREACHABLE: "object store unreachable or refusing access (endpoint, network timeout, credentials, missing bucket); nothing was written",
    EXIT_GATE_REJECTED: "`train`, `controller --once`: the evaluation gate rejected the candidate (a decision, not a crash)",
    EXIT_INCONSISTENT: "`windows consistency`: the two sources disagree on the window's counts or ids",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGINT or SIGTERM): the lease was released; a rerun continues",
}
"""Every exit code any ctpipe command returns, and what it means."""


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

    exit_code = EXIT_INTERNAL


class ConfigError(CtpipeError, ValueError):
    """The configuration file or a command-line value is wrong."""

    exit_code = EXIT_CONFIG


class InputError(CtpipeError):
    """An input (file, glob, topic) is missing, unreadable or corrupt."""

    exit_code = EXIT_INPUT

    @classmethod
    def no_match(cls, pattern: str) -> "InputError":
        """The error for an input glob that matches no file (the reader's and the CLI's early check)."""
        return cls(f"no input files match {pattern!r}; check source.files.uri in the config")


class StorageError(CtpipeError):
    """The storage root holds something unexpected (corrupt manifest, missing schema...)."""

    exit_code = EXIT_STORAGE


class LockError(CtpipeError):
    """Another ctpipe process holds the lease on this storage root."""

    exit_code = EXIT_LOCKED


class FencedError(LockError):
    """This process's lease was taken over (or could not be renewed): a publish was refused."""

    exit_code = EXIT_FENCED


class TerminatedError(CtpipeError):
    """SIGTERM arrived: the command stopped at a safe point and released its lease."""

    exit_code = EXIT_INTERRUPTED


class RegistryError(CtpipeError):
    """The model registry refused an operation."""

    exit_code = EXIT_REGISTRY


class ObjectStoreError(CtpipeError):
    """An object store (s3://, gs://) named by the storage root, the inputs or the registry did not
    answer in time, refused the credentials, or lacks the bucket."""

    exit_code = EXIT_UNREACHABLE


class IntegrityError(RegistryError):
    """A stored artifact does not match its recorded checksum."""


class LeaseConflict(Exception):
    """A lease store's conditional write lost: the record exists (create) or changed (replace).
    Not an error of the command: core/lock.py reads the record again. (``core.lease_stores.Conflict``.)"""
