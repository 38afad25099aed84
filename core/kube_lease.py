"""A lease store on a Kubernetes ``coordination.k8s.io/v1`` Lease (core/lease_stores.py's interface).

Location: ``kubernetes://<namespace>/<lease-name>``, optionally with a query naming how to reach
the API server: ``?server=https://host:port&ca_file=/path/ca.crt&token_file=/path/token``. Without
them, the pod's own: ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` and the
service-account files under ``/var/run/secrets/kubernetes.io/serviceaccount`` (``token``,
``ca.crt``). The location names files, never a token, so it can be logged and pickled.

Mapping of the lease record (core/lock.py) onto the Lease object:

- ``spec.leaseTransitions`` is the fencing token (``token``): it grows by one at every takeover,
  as Kubernetes' own leader election counts it;
- ``spec.holderIdentity`` is the holder id while the lease is held, absent once it is released;
- ``spec.leaseDurationSeconds`` is the TTL (rounded up to whole seconds), ``spec.renewTime`` the
  holder's wall-clock time of the write (shown to people; the protocol never compares clocks),
  ``spec.acquireTime`` the time the token was first written;
- the annotation ``ctpipe.io/lease-record`` holds the whole record as JSON (state, pid, host,
  command, write id), so ``kubectl get lease -o yaml`` shows who holds it.

The version is ``metadata.resourceVersion``. ``create`` POSTs the Lease (409 AlreadyExists: a
Conflict); ``replace`` PUTs it with the version read (409 Conflict: somebody else wrote first;
404: it was deleted meanwhile). The API server checks the resourceVersion and the write in one
etcd transaction, so of two writers of the same version exactly one wins.

Only plain HTTPS with the standard library: no Kubernetes client is needed.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Optional

from core.errors import LeaseConflict as Conflict
from core.errors import StorageError

SCHEME = "kubernetes://"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
ANNOTATION = "ctpipe.io/lease-record"
TIMEOUT_S = 10.0
"""Seconds one API request may take (connect and answer)."""

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-.")


def _dns_name(value: str, what: str, uri: str) -> str:
    if not value or len(value) > 253 or set(value) - _NAME_CHARS or value[0] in "-." or value[-1] in "-.":
        raise StorageError(f"{uri}: the {what} {value!r} is not a Kubernetes name (lower-case letters, digits, "
                           "'-' and '.', starting and ending with a letter or digit); write "
                           "kubernetes://<namespace>/<lease-name>")
    return value


@dataclass(frozen=True)
class Location:
    """Where a Lease lives and how to reach its API server (no secrets: the token is a file)."""

    namespace: str
    name: str
    server: str
    ca_file: str
    token_file: str

    @property
    def url(self) -> str:
        return f"{self.server}/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"


def parse(uri: str, environ=None) -> Location:
    """The :class:`Location` of ``kubernetes://<namespace>/<name>[?server=&ca_file=&token_file=]``."""
    environ = os.environ if environ is None else environ
    if not uri.startswith(SCHEME):
        raise StorageError(f"{uri} is not a Kubernetes lease; write kubernetes://<namespace>/<lease-name>")
    parts = urllib.parse.urlsplit(uri)
    namespace, path = parts.netloc, parts.path.strip("/")
    if not namespace or not path or "/" in path:
        raise StorageError(f"{uri} does not name a namespace and a lease; write kubernetes://<namespace>/<lease-name>")
    _dns_name(namespace, "namespace", uri)
    _dns_name(path, "lease name", uri)
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"server", "ca_file", "token_file"}
    if unknown:
        raise StorageError(f"{uri}: unknown setting(s) {', '.join(sorted(unknown))}; the query may name server, "
                           "ca_file and token_file")
    one = {k: v[-1] for k, v in query.items()}
    server = one.get("server")
    if not server:
        host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise StorageError(f"{uri}: no Kubernetes API server to ask: this process does not run in a pod "
                               "(KUBERNETES_SERVICE_HOST is unset) and controller.kubernetes.api_server is not set")
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    if not server.startswith("https://"):
        raise StorageError(f"{uri}: the API server {server} must be an https:// URL (the token is sent to it)")
    return Location(namespace, path, server.rstrip("/"),
                    one.get("ca_file") or os.path.join(SERVICE_ACCOUNT_DIR, "ca.crt"),
                    one.get("token_file") or os.path.join(SERVICE_ACCOUNT_DIR, "token"))


def location_uri(namespace_and_name: str, server: Optional[str] = None, ca_file: Optional[str] = None,
                 token_file: Optional[str] = None) -> str:
    """``kubernetes://ns/name`` with the explicit connection settings that are set added as its query."""
    query = {k: v for k, v in (("server", server), ("ca_file", ca_file), ("token_file", token_file)) if v}
    return namespace_and_name + ("?" + urllib.parse.urlencode(query) if query else "")


def _micro_time(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubernetesLeaseStore:
    """A lease record kept in one ``coordination.k8s.io/v1`` Lease (module docstring)."""

    def __init__(self, uri: str, environ=None):
        self.uri = uri
        self.location = parse(uri, environ)
        self._context: Optional[ssl.SSLContext] = None
        self._last: Optional[dict] = None  # the Lease as last read or written (for its acquireTime)

    def __str__(self) -> str:
        return f"Lease {self.location.namespace}/{self.location.name} on {self.location.server}"

    # ------------------------------------------------------------------ HTTP

    def _ssl(self) -> ssl.SSLContext:
        if self._context is None:
            ca = self.location.ca_file
            if not os.path.isfile(ca):
                raise StorageError(f"{self}: the API server's CA certificate {ca} does not exist; set "
                                   "controller.kubernetes.ca_file, or mount the service-account token "
                                   "(automountServiceAccountToken: true)")
            self._context = ssl.create_default_context(cafile=ca)
        return self._context

    def _token(self) -> str:
        # Read at every request: the kubelet rotates a pod's projected token file.
        path = self.location.token_file
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise StorageError(f"{self}: cannot read the service-account token {path} ({exc.strerror}); set "
                               "controller.kubernetes.token_file, or mount the service-account token "
                               "(automountServiceAccountToken: true)") from None
        if not token:
            raise StorageError(f"{self}: the token file {path} is empty")
        return token

    def _request(self, method: str, url: str, body: Optional[dict] = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self._token()}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=self._ssl()) as reply:
                return reply.status, json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                status = json.loads(exc.read() or b"{}")
            except ValueError:
                status = {}
            return exc.code, status if isinstance(status, dict) else {}
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out, TLS
            reason = getattr(exc, "reason", exc)
            raise StorageError(f"{self}: cannot reach the API server ({reason}); check "
                               "controller.kubernetes.api_server (or, in a pod, KUBERNETES_SERVICE_HOST) and "
                               "controller.kubernetes.ca_file") from None

    def _refused(self, code: int, status: dict, verb: str) -> StorageError:
        message = status.get("message") or f"HTTP {code}"
        where = f"{self}"
        if code == 401:
            return StorageError(f"{where}: the API server refused the token ({message}): the token in "
                                f"{self.location.token_file} is not valid for it (expired, revoked, or of "
                                "another cluster); mount the pod's service-account token or point "
                                "controller.kubernetes.token_file at a valid one")
        if code == 403:
            return StorageError(f"{where}: not allowed to {verb} leases ({message}); grant the controller's "
                                f"service account get, create and update on leases.coordination.k8s.io in "
                                f"namespace {self.location.namespace}: apply the Role and RoleBinding of "
                                "deploy/k8s/controller-rbac.yaml")
        if code == 404 and status.get("details", {}).get("kind") == "namespaces":
            return StorageError(f"{where}: the namespace {self.location.namespace} does not exist ({message}); "
                                "create it, or name an existing one in controller.lease")
        return StorageError(f"{where}: {verb} answered HTTP {code}: {message}")

    # ------------------------------------------------------------------ record <-> Lease

    def _decode(self, lease: dict) -> tuple[str, dict]:
        meta, spec = lease.get("metadata", {}), lease.get("spec", {})
        try:
            record = json.loads(meta.get("annotations", {})[ANNOTATION])
        except (KeyError, TypeError, ValueError):
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("token"), int) \
                or record["token"] != spec.get("leaseTransitions"):
            raise StorageError(f"{self} is not a ctpipe lease (no {ANNOTATION} annotation matching "
                               "spec.leaseTransitions): another program uses this Lease; name another one in "
                               "controller.lease, or stop every ctpipe controller and delete it")
        return str(meta["resourceVersion"]), record

    def _lease(self, record: dict, previous: Optional[dict], version: Optional[str]) -> dict:
        spec = {"leaseDurationSeconds": max(1, math.ceil(float(record.get("ttl_s", 1)))),
                "leaseTransitions": int(record["token"]),
                "renewTime": _micro_time(record.get("written_at", 0))}
        if record.get("state") == "held":
            spec["holderIdentity"] = str(record["holder"])
        same_token = previous is not None and previous.get("spec", {}).get("leaseTransitions") == record["token"]
        spec["acquireTime"] = previous["spec"].get("acquireTime", spec["renewTime"]) if same_token \
            else spec["renewTime"]
        meta = {"name": self.location.name, "namespace": self.location.namespace,
                "labels": {"app.kubernetes.io/part-of": "ctpipe"},
                "annotations": {ANNOTATION: json.dumps(record, sort_keys=True)}}
        if version is not None:
            meta["resourceVersion"] = version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    # ------------------------------------------------------------------ the store's three operations

    def _get(self) -> Optional[dict]:
        code, lease = self._request("GET", f"{self.location.url}/{self.location.name}")
        if code == 404 and lease.get("details", {}).get("kind") == "leases":
            return None
        if code != 200:
            raise self._refused(code, lease, "get")
        return lease

    def read(self) -> Optional[tuple[str, dict]]:
        lease = self._get()
        if lease is None:
            return None
        self._last = lease
        return self._decode(lease)

    def create(self, record: dict) -> str:
        code, lease = self._request("POST", self.location.url, self._lease(record, None, None))
        if code == 409:
            raise Conflict(str(self))
        if code != 201:
            raise self._refused(code, lease, "create")
        self._last = lease
        return str(lease["metadata"]["resourceVersion"])

    def replace(self, version: str, record: dict) -> str:
        previous = self._last
        if previous is not None and str(previous.get("metadata", {}).get("resourceVersion")) != str(version):
            previous = None
        body = self._lease(record, previous, str(version))
        code, lease = self._request("PUT", f"{self.location.url}/{self.location.name}", body)
        if code == 409 or (code == 404 and lease.get("details", {}).get("kind") == "leases"):
            raise Conflict(str(self))
        if code != 200:
            raise self._refused(code, lease, "update")
        self._last = lease
        return str(lease["metadata"]["resourceVersion"])
