"""The one exception hierarchy of ctpipe.

Every error ctpipe raises on purpose derives from :class:`CtpipeError`; messages name the bad
value and say how to fix it.
"""


class CtpipeError(Exception):
    """Base class of every error ctpipe raises on purpose."""


class ConfigError(CtpipeError):
    """A configuration value is missing, malformed or inconsistent."""


class RegistryError(CtpipeError):
    """A model registry operation cannot be carried out (unknown model/version/alias, ...)."""


class IntegrityError(RegistryError):
    """A stored model version does not match the checksums recorded when it was pushed."""
