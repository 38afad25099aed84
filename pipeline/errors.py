"""Error types of ctpipe (minimal version for the kafka branch; main's module replaces it)."""


class CtpipeError(Exception):
    """Base class of the errors ctpipe raises on purpose."""


class ConfigError(CtpipeError):
    """The configuration is invalid or names a secret/file that is not available."""
