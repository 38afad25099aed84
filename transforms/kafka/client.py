"""Translate ctpipe's Kafka configuration into kafka-python client keyword arguments.

Secrets never live in YAML: the config names an environment variable (``sasl_username_env``,
``sasl_password_env``) or a file (``sasl_password_file``, e.g. a mounted Kubernetes secret), and
they are resolved here, at client-construction time. The returned mapping masks the password in
its ``repr``/``str`` so logging the kwargs cannot leak it.

The one mapping serves consumers, producers and admin clients alike: it carries the connection
settings every client shares, plus ``max_partition_fetch_bytes`` and ``isolation_level``
(consumer) and ``max_request_size`` (producer) sized from ``max_message_bytes``. ``transforms.kafka.source``
hands each client class only the keys it knows.
"""
from __future__ import annotations

import os
from typing import Any

from core.errors import ConfigError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ISOLATION_LEVELS = ("read_committed", "read_uncommitted")
DEFAULT_ISOLATION_LEVEL = "read_committed"
MASK = "***"
_SECRET_KEYS = ("sasl_plain_password",)
_DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024


class KafkaClientKwargs(dict):
    """A plain dict of kafka-python kwargs whose repr/str hide secret values.

    ``settings`` names, for error messages, the configuration each credential came from (keys
    ``user``, ``password``, ``cafile``), e.g. ``source.kafka.sasl_password_env (KAFKA_PASSWORD)``;
    never a secret value. It travels with copies and pickles of the mapping.

    Secrets never travel: a pickle (what Beam puts in the pipeline proto sent to a runner, with
    every DoFn holding these kwargs) or a copy carries only where each secret comes from
    (``secret_refs``: an environment variable or a file), and ``resolve_secrets`` reads it again
    where the client is made, on the worker (``transforms.kafka.source.kwargs_for`` calls it).
    """

    settings: dict[str, str]
    secret_refs: dict[str, tuple]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = {}
        self.secret_refs = {}

    def __repr__(self) -> str:
        shown = {k: (MASK if k in _SECRET_KEYS and v is not None else v) for k, v in self.items()}
        return f"KafkaClientKwargs({shown!r})"

    __str__ = __repr__

    def __reduce__(self):
        public = {k: v for k, v in self.items() if k not in self.secret_refs}
        return (_rebuild_kwargs, (public, dict(self.settings), dict(self.secret_refs)))

    def resolve_secrets(self) -> "KafkaClientKwargs":
        """Read every secret named in ``secret_refs`` that this copy does not hold (ConfigError
        naming the variable or file when it is missing here)."""
        for key, (kind, where, what) in self.secret_refs.items():
            if key not in self:
                self[key] = _read_env(where, what) if kind == "env" else _read_secret_file(where, what)
        return self


def _rebuild_kwargs(public: dict, settings: dict, secret_refs: dict) -> KafkaClientKwargs:
    out = KafkaClientKwargs(public)
    out.settings = settings
    out.secret_refs = secret_refs
    return out


def parse_bootstrap_servers(value: str) -> list[str]:
    """Split a comma-separated ``host:port`` list; raise ConfigError when it is empty or malformed."""
    servers = [s.strip() for s in (value or "").split(",") if s.strip()]
    if not servers:
        raise ConfigError("kafka.bootstrap_servers is empty; set it to a comma-separated list of "
                          "host:port, e.g. 'broker-0:9092,broker-1:9092'")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"kafka.bootstrap_servers entry {server!r} is not host:port "
                              "(e.g. 'broker-0:9092')")
    return servers


def _read_env(var: str, what: str) -> str:
    value = os.environ.get(var)
    if value is None or value == "":
        raise ConfigError(
            f"Kafka {what}: environment variable {var} (named in the Kafka config) is "
            f"{'empty' if value == '' else 'not set'}; export {var} in the pipeline's environment "
            "(for Kubernetes, from a Secret). Secrets are never read from YAML.")
    return value


def _read_secret_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(
            f"Kafka {what}: cannot read file {path} named by kafka.sasl_password_file "
            f"({exc.strerror or exc}); mount the secret at that path or fix the setting.") from exc
    if not value:
        raise ConfigError(f"Kafka {what}: file {path} named by kafka.sasl_password_file is empty; "
                          "write the password into it or fix the setting.")
    return value


def _password_setting(cfg: Any) -> str:
    env_var = getattr(cfg, "sasl_password_env", None)
    if env_var:
        return f"source.kafka.sasl_password_env (environment variable {env_var})"
    return f"source.kafka.sasl_password_file ({getattr(cfg, 'sasl_password_file', None)})"


def _sasl_password_ref(cfg: Any) -> tuple:
    env_var = getattr(cfg, "sasl_password_env", None)
    path = getattr(cfg, "sasl_password_file", None)
    if env_var and path:
        raise ConfigError("kafka.sasl_password_env and kafka.sasl_password_file are both set; "
                          "set exactly one of them")
    if env_var:
        return ("env", env_var, "SASL password")
    if path:
        return ("file", path, "SASL password")
    raise ConfigError("Kafka SASL needs a password: set kafka.sasl_password_env (an environment "
                      "variable name) or kafka.sasl_password_file (a file path)")


def _sasl_kwargs(cfg: Any, protocol: str) -> tuple[dict[str, Any], dict[str, tuple]]:
    """(settings, secret references) of SASL; the secrets are read by ``resolve_secrets``."""
    mechanism = getattr(cfg, "sasl_mechanism", None)
    if not protocol.startswith("SASL_"):
        if mechanism:
            raise ConfigError(f"kafka.sasl_mechanism is {mechanism!r} but security_protocol is "
                              f"{protocol}; use SASL_SSL or SASL_PLAINTEXT, or drop the mechanism")
        return {}, {}
    if mechanism not in SASL_MECHANISMS:
        raise ConfigError(f"kafka.sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)} with "
                          f"security_protocol {protocol}, not {mechanism!r}")
    user_env = getattr(cfg, "sasl_username_env", None)
    if not user_env:
        raise ConfigError("Kafka SASL needs a user name: set kafka.sasl_username_env to the name of "
                          "an environment variable holding it")
    return {"sasl_mechanism": mechanism}, {"sasl_plain_username": ("env", user_env, "SASL user name"),
                                           "sasl_plain_password": _sasl_password_ref(cfg)}


def _ssl_kwargs(cfg: Any, protocol: str) -> dict[str, Any]:
    if protocol not in ("SSL", "SASL_SSL"):
        return {}
    out: dict[str, Any] = {"ssl_check_hostname": bool(getattr(cfg, "ssl_check_hostname", True))}
    cafile = getattr(cfg, "ssl_cafile", None)
    if cafile:
        if not os.path.isfile(cafile):
            raise ConfigError(f"kafka.ssl_cafile {cafile} does not exist or is not a file; mount "
                              "the CA bundle there or unset it to use the system trust store")
        out["ssl_cafile"] = cafile
    return out


def client_kwargs(kafka_cfg: Any) -> KafkaClientKwargs:
    """kafka-python keyword arguments (connection, security, message size) for ``kafka_cfg``.

    ``kafka_cfg`` has ``bootstrap_servers``, ``security_protocol``, ``sasl_mechanism``,
    ``sasl_username_env``, ``sasl_password_env``, ``sasl_password_file``, ``ssl_cafile``,
    ``ssl_check_hostname``, ``max_message_bytes`` and ``isolation_level``. Raises ConfigError
    naming the setting, the environment variable or the file at fault, and how to fix it.
    """
    protocol = getattr(kafka_cfg, "security_protocol", None) or "PLAINTEXT"
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(f"kafka.security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                          f"not {protocol!r}")
    max_bytes = getattr(kafka_cfg, "max_message_bytes", None) or _DEFAULT_MAX_MESSAGE_BYTES
    if not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ConfigError(f"kafka.max_message_bytes must be a positive integer, not {max_bytes!r}")
    isolation = getattr(kafka_cfg, "isolation_level", None) or DEFAULT_ISOLATION_LEVEL
    if isolation not in ISOLATION_LEVELS:
        raise ConfigError(f"kafka.isolation_level must be one of {', '.join(ISOLATION_LEVELS)}, "
                          f"not {isolation!r}")
    out = KafkaClientKwargs(
        bootstrap_servers=parse_bootstrap_servers(getattr(kafka_cfg, "bootstrap_servers", "")),
        client_id="ctpipe",
        security_protocol=protocol,
        max_partition_fetch_bytes=max(max_bytes, _DEFAULT_MAX_MESSAGE_BYTES),
        max_request_size=max_bytes,
        isolation_level=isolation,
    )
    out.update(_ssl_kwargs(kafka_cfg, protocol))
    sasl, refs = _sasl_kwargs(kafka_cfg, protocol)
    out.update(sasl)
    out.secret_refs = refs
    out.resolve_secrets()  # here too: a missing secret is a ConfigError before anything runs
    if "ssl_check_hostname" in out:
        cafile = out.get("ssl_cafile")
        out.settings["cafile"] = (f"source.kafka.ssl_cafile ({cafile})" if cafile else
                                  "source.kafka.ssl_cafile (unset: the system trust store)")
    if "sasl_mechanism" in out:
        out.settings["user"] = f"source.kafka.sasl_username_env (environment variable {kafka_cfg.sasl_username_env})"
        out.settings["password"] = _password_setting(kafka_cfg)
    return out


_ENV_PROVIDER = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
_DIR_PROVIDER = "org.apache.kafka.common.config.provider.DirectoryConfigProvider"


def _java_password_ref(kafka_cfg) -> tuple[str, str, str]:
    """(provider name, provider class, ``${...}`` reference) through which the Java client reads
    the SASL password where it connects: ``${env:VAR}`` for sasl_password_env, ``${dir:DIR:FILE}``
    (Kafka's DirectoryConfigProvider: the whole file is the value) for sasl_password_file."""
    env_var = getattr(kafka_cfg, "sasl_password_env", None)
    if env_var:
        return "env", _ENV_PROVIDER, f"${{env:{env_var}}}"
    path = os.path.abspath(kafka_cfg.sasl_password_file)
    if any(c in path for c in ':{}"'):
        raise ConfigError(f"kafka.sasl_password_file {path!r} holds one of the characters : {{ }} \" that Kafka's "
                          "config-provider references cannot carry; mount the password file at a plain path")
    with open(path, "rb") as fh:  # client_kwargs has read it: it exists here
        if fh.read().endswith((b"\n", b"\r")):
            raise ConfigError(f"kafka.sasl_password_file {path} ends with a line break, which Kafka's Java client "
                              "(the unbounded graph's reader) would send as part of the password; write the file "
                              "without a trailing newline, e.g. printf '%s' \"$PASSWORD\" > FILE")
    directory, name = os.path.split(path)
    return "dir", _DIR_PROVIDER, f"${{dir:{directory}:{name}}}"


def java_consumer_config(kafka_cfg) -> dict:
    """Kafka consumer properties for the cross-language ReadFromKafka (Java client names).

    The SASL password never enters them: these properties travel in the expansion request, the
    pipeline proto and the Flink job graph. ``sasl.jaas.config`` holds a reference that Kafka's
    config providers resolve inside the JVM that opens the connection (the job server, which lists
    the partitions when it translates the job, and the TaskManagers, which read):
    ``${env:VAR}`` (sasl_password_env: the variable must be set in those JVMs' environment) or
    ``${dir:DIR:FILE}`` (sasl_password_file: the file must be mounted there, holding exactly the
    password, with no trailing newline). The user name, not a secret, is resolved here.
    """
    kwargs = client_kwargs(kafka_cfg)  # validates everything, and that the secret can be read here
    # enable.auto.commit off: the Java client's default (on, with a group.id) would commit offsets of
    # records no checkpoint covers yet; KafkaIO commits them itself when a checkpoint completes
    # (commit_offset_in_finalize), so a job started afresh continues from a checkpointed position.
    out = {"bootstrap.servers": ",".join(kwargs["bootstrap_servers"]), "group.id": kafka_cfg.group_id,
           "enable.auto.commit": "false",
           "security.protocol": kwargs["security_protocol"], "auto.offset.reset": "earliest",
           "max.partition.fetch.bytes": str(kwargs["max_partition_fetch_bytes"]),
           "isolation.level": kwargs["isolation_level"]}
    if "ssl_cafile" in kwargs:
        # Absolute: the JVMs that open the file (job server, TaskManagers) have working directories
        # of their own; a relative path would name a file there, or none.
        out["ssl.truststore.type"] = "PEM"
        out["ssl.truststore.location"] = os.path.abspath(kwargs["ssl_cafile"])
    if kwargs.get("ssl_check_hostname") is False:
        out["ssl.endpoint.identification.algorithm"] = ""
    if "sasl_mechanism" in kwargs:
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if kwargs["sasl_mechanism"] == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")
        user = kwargs["sasl_plain_username"].replace('"', '\\"')
        name, provider, ref = _java_password_ref(kafka_cfg)
        out["config.providers"] = name
        out[f"config.providers.{name}.class"] = provider
        out["sasl.mechanism"] = kwargs["sasl_mechanism"]
        out["sasl.jaas.config"] = f'{module} required username="{user}" password="{ref}";'
    return out
