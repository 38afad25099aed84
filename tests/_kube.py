"""A real kube-apiserver (on etcd) for tests: started by ``scripts/services.sh start kube``, spoken to
over plain HTTPS with the standard library (the same way core/kube_lease.py speaks to it).

``KubeService(state_dir).start()`` builds the binaries first when scripts/fetch_kube.sh has no cached
build (a cold build takes many minutes: the timeout allows it). ``KubeApi`` is a small client with
the cluster's administrator token (system:masters): create namespaces and objects, mint a service
account's token through the TokenRequest API, and send any request with any token.
"""
from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from tests._procs import SERVICES_SH

KUBE_START_TIMEOUT_S = 2400.0  # a cold start compiles kube-apiserver and etcd (scripts/fetch_kube.sh)


class KubeService:
    """etcd + kube-apiserver in ``state_dir`` (scripts/services.sh keeps them under ``state_dir/kube``)."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.env: dict[str, str] = {}

    def _script(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess:
        env = {**os.environ, "CTPIPE_SERVICES_DIR": str(self.state_dir), "PYTHON": sys.executable,
               "CTPIPE_SERVICES_OWNER_PID": str(os.getpid())}
        return subprocess.run(["bash", str(SERVICES_SH), *args], env=env, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)

    def start(self, timeout_s: float = KUBE_START_TIMEOUT_S) -> "KubeService":
        done = self._script("start", "kube", timeout_s=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"scripts/services.sh start kube failed (exit {done.returncode}) for state dir "
                               f"{self.state_dir}:\n{done.stderr[-4000:]}{done.stdout[-1000:]}")
        self.env = dict(line.split("=", 1) for line in
                        (self.state_dir / "kube.env").read_text(encoding="utf-8").splitlines() if "=" in line)
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        self._script("stop", "kube", timeout_s=timeout_s)


class KubeApi:
    """The running API server: ``server`` (https URL), ``ca_file``, ``admin_token_file``."""

    def __init__(self, env: dict[str, str], state_dir: Path):
        self.server = env["CTPIPE_KUBE_API_SERVER"]
        self.ca_file = env["CTPIPE_KUBE_CA_FILE"]
        self.admin_token_file = env["CTPIPE_KUBE_ADMIN_TOKEN_FILE"]
        self.state_dir = Path(state_dir)
        self._ctx = ssl.create_default_context(cafile=self.ca_file)

    def request(self, method: str, path: str, body: Optional[dict] = None,
                token: Optional[str] = None) -> tuple[int, dict]:
        """(HTTP status, JSON body) of one request; the admin token unless ``token`` is given."""
        token = token if token is not None else Path(self.admin_token_file).read_text().strip()
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.server}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._ctx) as reply:
                return reply.status, json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def ok(self, method: str, path: str, body: Optional[dict] = None) -> dict:
        code, reply = self.request(method, path, body)
        if code >= 300:
            raise AssertionError(f"{method} {path}: HTTP {code}: {reply.get('message')}")
        return reply

    def create_namespace(self, name: str) -> None:
        self.ok("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def service_account_token_file(self, namespace: str, account: str, where: Path) -> str:
        """A bound token of ``namespace/account`` (TokenRequest API, 10 minutes), written to a 0600
        file under ``where``; returns the file's path."""
        reply = self.ok("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
                        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": 600}})
        path = Path(where) / f"{namespace}-{account}.token"
        path.write_text(reply["status"]["token"])
        path.chmod(0o600)
        return str(path)

    def lease_uri(self, namespace: str, name: str, token_file: str) -> str:
        """A ``kubernetes://`` lease location that reaches this API server with ``token_file``."""
        from core.kube_lease import location_uri

        return location_uri(f"kubernetes://{namespace}/{name}", self.server, self.ca_file, token_file)
