"""Object stores (s3://, gs://): the one set of connection settings every client is built from.

``ObjectStoreSettings`` (from the config's ``object_store`` section, see pipeline/stores.py) holds
the S3 endpoint and region and the network limits. From it come:

- ``beam_flags``: the Beam pipeline options of Beam's S3 file system (endpoint, region), which
  core/storage.py, the window writers and the registry's file backend all read through;
- ``s3_client``: a boto3 client with the same endpoint and region and with the connect/read
  timeouts and attempt limit, for what ctpipe asks S3 itself (the reachability check);
- ``mlflow_environment``: what MLflow's S3 artifact client reads (it takes only the environment).

Credentials are never settings: boto3's own chain finds them on every machine that runs a part of
the job (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, a mounted
``AWS_SHARED_CREDENTIALS_FILE`` with ``AWS_PROFILE``, a web-identity token file, an instance
role); GCS uses Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS`` or workload
identity). So no secret enters a config file, a Beam option (which runners serialize into the
job) or a log line.

``check_reachable`` asks each bucket once, with the short timeouts, before a command touches it:
an endpoint that does not answer, refused credentials or a missing bucket stop the command with
one line (ObjectStoreError, exit code 8) instead of Beam's own retries, which back off for minutes.
Nothing here imports boto3, Google's client or Beam at module level.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Iterable, Optional

from core.errors import ObjectStoreError

S3_CREDENTIALS_HINT = ("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or a mounted "
                       "AWS_SHARED_CREDENTIALS_FILE with AWS_PROFILE")
GCS_CREDENTIALS_HINT = "GOOGLE_APPLICATION_CREDENTIALS (a mounted key file) or the workload's identity"


@dataclass(frozen=True)
class ObjectStoreSettings:
    """Connection settings shared by every client of every object store ctpipe touches."""

    s3_endpoint_url: Optional[str] = None
    """http(s)://host:port of an S3-compatible server; None: AWS (or ``AWS_ENDPOINT_URL``)."""
    s3_region: Optional[str] = None
    """S3 region; None: boto3's own default (``AWS_DEFAULT_REGION``, the profile)."""
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 3
    """Tries per request of ctpipe's own clients (the first one included)."""

    @property
    def limits_text(self) -> str:
        return (f"{self.max_attempts} attempt(s), {self.connect_timeout_s:g} s to connect, "
                f"{self.read_timeout_s:g} s to read")


_current = ObjectStoreSettings()


def use(settings: ObjectStoreSettings) -> None:
    """Make ``settings`` this process's (what ``current`` returns; set with Beam's FileSystems options)."""
    global _current
    _current = settings


def current() -> ObjectStoreSettings:
    return _current


def put_empty_s3(uri: str) -> None:
    """Write an empty object: Beam's S3 uploader cannot (it completes a multipart upload with no
    parts, which S3 refuses), so core/storage.py sends empty files here."""
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    s3_client(_settings_of_filesystems()).put_object(Bucket=bucket, Key=key, Body=b"")


def _settings_of_filesystems() -> ObjectStoreSettings:
    """``current()`` with the endpoint and region Beam's FileSystems use in this process (a worker
    of a cluster runner gets them with the pipeline options, not through ``use``)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import S3Options

    options = FileSystems._pipeline_options
    if options is None:
        return current()
    s3 = options.view_as(S3Options)
    return dataclasses.replace(current(), s3_endpoint_url=s3.s3_endpoint_url or current().s3_endpoint_url,
                               s3_region=s3.s3_region_name or current().s3_region)


def scheme(uri: Optional[str]) -> Optional[str]:
    """``s3``, ``gs``... for an object-store URI; None for a local path or an MLflow URI."""
    if not uri or "://" not in uri or uri.startswith(("mlflow", "memory://", "file://")):
        return None
    return uri.split("://", 1)[0].lower()


def bucket_of(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0]


def beam_flags(settings: ObjectStoreSettings) -> list[str]:
    """Beam pipeline-option flags for its S3 file system: endpoint and region, never credentials
    (Beam's client then uses boto3's credential chain on each worker)."""
    flags = []
    if settings.s3_endpoint_url:
        flags.append(f"--s3_endpoint_url={settings.s3_endpoint_url}")
    if settings.s3_region:
        flags.append(f"--s3_region_name={settings.s3_region}")
    return flags


def mlflow_environment(settings: ObjectStoreSettings) -> dict:
    """Environment variables MLflow's S3 artifact repository reads (it has no other way in)."""
    env = {}
    if settings.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    if settings.s3_region:
        env["AWS_DEFAULT_REGION"] = settings.s3_region
    return env


def s3_client(settings: ObjectStoreSettings):
    """A boto3 S3 client with the settings' endpoint, region, timeouts and attempt limit."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=settings.connect_timeout_s, read_timeout=settings.read_timeout_s,
                    retries={"max_attempts": settings.max_attempts, "mode": "standard"})
    return boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url,
                                          region_name=settings.s3_region, config=config)


def _endpoint_text(settings: ObjectStoreSettings) -> str:
    if settings.s3_endpoint_url:
        return f"the S3 endpoint {settings.s3_endpoint_url} (object_store.s3.endpoint_url)"
    env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if env:
        return f"the S3 endpoint {env} (from AWS_ENDPOINT_URL)"
    return "AWS S3 (no object_store.s3.endpoint_url set; set it for an S3-compatible server)"


def _check_s3_bucket(client, settings: ObjectStoreSettings, bucket: str, what: str, uri: str) -> None:
    from botocore import exceptions as bx

    where = _endpoint_text(settings)
    try:
        client.head_bucket(Bucket=bucket)
    except (bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.EndpointConnectionError,
            bx.ConnectionClosedError) as exc:
        raise ObjectStoreError(
            f"cannot reach {where} for {what} {uri} ({type(exc).__name__}, {settings.limits_text}); "
            "check the endpoint and the network (object_store.connect_timeout / read_timeout / "
            "max_attempts set the limits); nothing was written") from None
    except bx.NoCredentialsError:
        raise ObjectStoreError(f"no S3 credentials for {what} {uri}: set {S3_CREDENTIALS_HINT}; "
                               "they never go in ctpipe.yaml or a runner config") from None
    except bx.ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code")
        if status == 404 or code in ("404", "NoSuchBucket"):
            raise ObjectStoreError(f"bucket {bucket!r} of {what} {uri} does not exist at {where}; "
                                   "create it or fix the URI") from None
        if status in (401, 403) or code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise ObjectStoreError(f"{where} refused access to bucket {bucket!r} of {what} (HTTP {status}); "
                                   f"check the credentials ({S3_CREDENTIALS_HINT}) and the bucket policy") from None
        raise ObjectStoreError(f"{where} answered HTTP {status} ({code}) for bucket {bucket!r} of {what}; "
                               "check the endpoint (is it an S3 server?) and the bucket") from None
    except bx.BotoCoreError as exc:
        raise ObjectStoreError(f"cannot use {where} for {what} {uri}: {exc}") from None


def _check_gcs_bucket(settings: ObjectStoreSettings, bucket: str, what: str, uri: str) -> None:
    import google.auth
    from google.auth import exceptions as gx

    try:
        from google.cloud import storage as gcs

        client = gcs.Client()
        client.get_bucket(bucket, timeout=(settings.connect_timeout_s, settings.read_timeout_s), retry=None)
    except gx.DefaultCredentialsError:
        raise ObjectStoreError(f"no GCS credentials for {what} {uri}: set {GCS_CREDENTIALS_HINT}; "
                               "they never go in ctpipe.yaml or a runner config") from None
    except Exception as exc:  # google.api_core / requests errors: one line, never a traceback
        from google.api_core import exceptions as ax

        if isinstance(exc, ax.NotFound):
            raise ObjectStoreError(f"bucket {bucket!r} of {what} {uri} does not exist; create it or "
                                   "fix the URI") from None
        if isinstance(exc, (ax.Forbidden, ax.Unauthorized)):
            raise ObjectStoreError(f"GCS refused access to bucket {bucket!r} of {what}; check "
                                   f"{GCS_CREDENTIALS_HINT} and the bucket's IAM") from None
        raise ObjectStoreError(f"cannot reach GCS for {what} {uri} ({type(exc).__name__}, "
                               f"{settings.limits_text}); check the network") from None
    del google.auth


def check_reachable(settings: ObjectStoreSettings, uris: Iterable[tuple[str, Optional[str]]]) -> None:
    """Ask each object-store bucket among ``uris`` ((what, uri) pairs, e.g. ("storage.root",
    "s3://b/x")) once, with the settings' timeouts; raises ObjectStoreError naming the first that
    does not answer, refuses the credentials or does not exist. Local paths are skipped."""
    seen = set()
    client = None
    for what, uri in uris:
        kind = scheme(uri)
        if kind is None or (kind, bucket_of(uri)) in seen:
            continue
        bucket = bucket_of(uri)
        seen.add((kind, bucket))
        if kind == "s3":
            client = client or s3_client(settings)
            _check_s3_bucket(client, settings, bucket, what, uri)
        elif kind == "gs":
            _check_gcs_bucket(settings, bucket, what, uri)
