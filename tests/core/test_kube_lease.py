"""The leader lease on a Kubernetes ``coordination.k8s.io/v1`` Lease (core/kube_lease.py), against a
real kube-apiserver on etcd (the ``kube_api`` fixture; RBAC on).

Every test runs in a namespace of its own into which deploy/k8s/controller-rbac.yaml is applied as
it is (only its namespace changed), and speaks with a real bound token of that service account: what
the tests can do, the Role in the manifests allows, and no more. Parsing and configuration tests at
the top need no server.
"""
from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest
import yaml

from core.errors import FencedError, LockError, StorageError
from core.kube_lease import ANNOTATION, KubernetesLeaseStore, location_uri, parse
from core.lease_stores import Conflict, open_store, read_record
from core.lock import StorageLock

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "deploy" / "k8s" / "controller-rbac.yaml"
LEASE = "ctpipe-controller"  # the one name the manifests' Role lets the controller get and update


# --------------------------------------------------------------------------- no server


def test_a_location_names_namespace_lease_and_connection():
    loc = parse("kubernetes://team-a/ctl?server=https://10.1.2.3:6443&ca_file=/c/ca.crt&token_file=/t/tok")
    assert (loc.namespace, loc.name, loc.server, loc.ca_file, loc.token_file) == (
        "team-a", "ctl", "https://10.1.2.3:6443", "/c/ca.crt", "/t/tok")
    assert loc.url == "https://10.1.2.3:6443/apis/coordination.k8s.io/v1/namespaces/team-a/leases"
    pod = parse("kubernetes://ctpipe/ctpipe-controller",
                environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    assert pod.server == "https://10.96.0.1:443"
    assert pod.token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert pod.ca_file == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    assert parse("kubernetes://a/b", environ={"KUBERNETES_SERVICE_HOST": "fd00::1"}).server == "https://[fd00::1]:443"
    assert isinstance(open_store("kubernetes://a/b?server=https://h:1"), KubernetesLeaseStore)
    assert location_uri("kubernetes://a/b") == "kubernetes://a/b"
    assert parse(location_uri("kubernetes://a/b", "https://h:1", "/x y/ca", None)).ca_file == "/x y/ca"


@pytest.mark.parametrize("uri, message", [
    ("kubernetes://ctpipe", "does not name a namespace and a lease"),
    ("kubernetes://ctpipe/a/b", "does not name a namespace and a lease"),
    ("kubernetes://Ctpipe/lease", "namespace 'Ctpipe' is not a Kubernetes name"),
    ("kubernetes://ctpipe/lease_1", "lease name 'lease_1' is not a Kubernetes name"),
    ("kubernetes://ctpipe/lease?token=abc", "unknown setting"),
    ("kubernetes://ctpipe/lease?server=http://h:80", "must be an https:// URL"),
    ("kubernetes://ctpipe/lease", "KUBERNETES_SERVICE_HOST is unset"),
])
def test_a_bad_location_is_refused_with_the_fix(uri, message):
    with pytest.raises(StorageError, match=message):
        parse(uri, environ={})


def test_an_unreachable_api_server_is_named(tmp_path):
    import certifi

    from tests._procs import free_port

    token = tmp_path / "token"
    token.write_text("t")
    uri = location_uri("kubernetes://ctpipe/ctpipe-controller", f"https://127.0.0.1:{free_port()}", certifi.where(),
                       str(token))
    with pytest.raises(StorageError, match=r"cannot reach the API server .*controller.kubernetes.api_server"):
        KubernetesLeaseStore(uri).read()


def test_controller_lease_config():
    from core.errors import ConfigError
    from pipeline.config import config_from_dict

    plain = config_from_dict({"storage": {"root": "/data/ct"}})
    assert plain.controller.lease is None
    assert plain.controller.lease_path("/data/ct") == "/data/ct/locks/controller.lease"
    kube = config_from_dict({"controller": {"lease": "kubernetes://ctpipe/ctpipe-controller", "kubernetes": {
        "api_server": "https://127.0.0.1:6443", "token_file": "/run/tok"}}})
    loc = parse(kube.controller.lease_path("/data/ct"), environ={})
    assert (loc.namespace, loc.name, loc.server, loc.token_file) == (
        "ctpipe", "ctpipe-controller", "https://127.0.0.1:6443", "/run/tok")
    with pytest.raises(ConfigError, match="controller.lease.*kubernetes://<namespace>/<lease-name>"):
        config_from_dict({"controller": {"lease": "s3://bucket/lease"}})
    with pytest.raises(ConfigError, match="controller.kubernetes.api_server.*https://host:port"):
        config_from_dict({"controller": {"kubernetes": {"api_server": "http://127.0.0.1:8080"}}})
    with pytest.raises(ConfigError, match="controller.kubernetes"):
        config_from_dict({"controller": {"kubernetes": {"token": "abc"}}})  # a token is never config


# --------------------------------------------------------------------------- a real API server


@pytest.fixture
def controller_ns(kube_api, tmp_path):
    """(namespace, token file of its ctpipe-controller service account) with the manifests' RBAC."""
    ns = f"ct-{uuid.uuid4().hex[:10]}"
    kube_api.create_namespace(ns)
    paths = {"ServiceAccount": f"/api/v1/namespaces/{ns}/serviceaccounts",
             "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
             "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"}
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    assert sorted(d["kind"] for d in docs) == ["Role", "RoleBinding", "ServiceAccount"]
    for doc in docs:
        doc["metadata"]["namespace"] = ns
        for subject in doc.get("subjects", []):
            subject["namespace"] = ns
        kube_api.ok("POST", paths[doc["kind"]], doc)
    return ns, kube_api.service_account_token_file(ns, "ctpipe-controller", tmp_path)


def _lock(kube_api, ns, token_file, *, ttl=1.5, name=LEASE, command="test") -> StorageLock:
    return StorageLock("the test root", path=kube_api.lease_uri(ns, name, token_file), command=command,
                       heartbeat_s=ttl / 6, stale_after_s=ttl)


def _lease(kube_api, ns, name=LEASE) -> dict:
    return kube_api.ok("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}")


@pytest.mark.integration
def test_the_record_is_a_lease_whose_transitions_are_the_token(kube_api, controller_ns):
    ns, token = controller_ns
    lock = _lock(kube_api, ns, token, ttl=30).acquire()
    try:
        lease = _lease(kube_api, ns)
        assert lease["spec"]["holderIdentity"] == lock.holder
        assert lease["spec"]["leaseTransitions"] == lock.token == 1
        assert lease["spec"]["leaseDurationSeconds"] == 30
        record = json.loads(lease["metadata"]["annotations"][ANNOTATION])
        assert record["state"] == "held" and record["command"] == "test"
    finally:
        lock.release()
    released = _lease(kube_api, ns)
    assert "holderIdentity" not in released["spec"] and released["spec"]["leaseTransitions"] == 1
    assert json.loads(released["metadata"]["annotations"][ANNOTATION])["state"] == "released"


@pytest.mark.integration
def test_replace_is_optimistic_on_the_resource_version(kube_api, controller_ns):
    """Two writers of the same resourceVersion: the API server lets exactly one win (409 for the other)."""
    ns, token = controller_ns
    uri = kube_api.lease_uri(ns, LEASE, token)
    a, b = KubernetesLeaseStore(uri), KubernetesLeaseStore(uri)
    first = {"token": 1, "holder": "a", "state": "held", "ttl_s": 5, "written_at": 0, "write_id": "w0"}
    a.create(first)
    with pytest.raises(Conflict):
        b.create(dict(first, holder="b"))  # the Lease exists
    version, _ = b.read()
    a.replace(version, dict(first, token=2, write_id="wa"))
    with pytest.raises(Conflict):
        b.replace(version, dict(first, token=2, holder="b", write_id="wb"))  # version seen before a's write
    assert b.read()[1]["write_id"] == "wa"


@pytest.mark.integration
def test_two_contenders_one_winner(kube_api, controller_ns):
    ns, token = controller_ns
    locks = [_lock(kube_api, ns, token, ttl=30) for _ in range(4)]
    barrier, won, lost = threading.Barrier(len(locks)), [], []

    def contend(lock):
        barrier.wait()
        try:
            won.append(lock.acquire(timeout_s=0))
        except LockError as exc:
            lost.append(str(exc))

    threads = [threading.Thread(target=contend, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert len(won) == 1 and len(lost) == len(locks) - 1, (won, lost)
        assert all("is held by" in message for message in lost)
        assert _lease(kube_api, ns)["spec"]["holderIdentity"] == won[0].holder
    finally:
        for lock in won:
            lock.release()


@pytest.mark.integration
def test_the_holders_renewals_keep_it_and_a_release_hands_it_over(kube_api, controller_ns):
    ns, token = controller_ns
    holder = _lock(kube_api, ns, token, ttl=1.5, command="holder").acquire()
    standby = _lock(kube_api, ns, token, ttl=1.5, command="standby")
    try:
        before = _lease(kube_api, ns)["metadata"]["resourceVersion"]
        with pytest.raises(LockError, match="command holder, token 1"):
            standby.acquire(timeout_s=3)  # twice the TTL: renewals kept it the whole time
        assert _lease(kube_api, ns)["metadata"]["resourceVersion"] != before  # it was renewed meanwhile
        holder.check_publish("the holder's publish")
        holder.release()
        standby.acquire(timeout_s=0)  # released: taken at once, no TTL wait
        assert standby.token == 2 and _lease(kube_api, ns)["spec"]["leaseTransitions"] == 2
    finally:
        holder.release()
        standby.release()


@pytest.mark.integration
def test_a_stale_holder_is_fenced_and_the_registry_refuses_its_push(kube_api, controller_ns, tmp_path):
    """The holder stops renewing (as a paused process does); the standby takes the Lease over after
    the TTL; the old holder's token is refused by the registry (FencedError: exit code 7)."""
    from tests.training.registry_behaviour import push
    from training.registry.file import FileRegistry

    ns, token = controller_ns
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"stand-in bytes")  # the registry checks names, not content
    registry = FileRegistry(str(tmp_path / "registry"))
    stale = _lock(kube_api, ns, token, ttl=1.5, command="stale").acquire()
    push(registry.fenced_by(stale), "m", str(model))
    stale._stop.set()  # its renewals stop: what a SIGSTOP or a partition does to a holder
    stale._thread.join(10)
    taker = _lock(kube_api, ns, token, ttl=1.5, command="taker").acquire(timeout_s=30)
    try:
        assert taker.token == 2 and read_record(taker.path)["holder"] == taker.holder
        with pytest.raises(FencedError, match=r"token 1.*command taker, token 2") as refused:
            stale.fence().check_publish("model 'm'")
        assert refused.value.exit_code == 7
        with pytest.raises(FencedError):
            push(registry, "m", str(model))
        assert [v.version for v in registry.list_versions("m")] == [1]
        pushed = push(registry.fenced_by(taker), "m", str(model))  # the new leader may
        assert [v.version for v in registry.list_versions("m")] == [1, pushed.version]
    finally:
        taker.release()
        stale.release()
    assert read_record(taker.path)["token"] == 2  # the stale holder's release wrote nothing


@pytest.mark.integration
def test_a_bad_token_names_the_fix(kube_api, controller_ns, tmp_path):
    ns, _ = controller_ns
    bad = tmp_path / "bad.token"
    bad.write_text("not-a-token")
    with pytest.raises(StorageError, match=r"refused the token .*controller.kubernetes.token_file"):
        _lock(kube_api, ns, str(bad)).acquire()
    with pytest.raises(StorageError, match="cannot read the service-account token"):
        _lock(kube_api, ns, str(tmp_path / "missing.token")).acquire()


@pytest.mark.integration
def test_an_account_without_the_role_is_told_the_rbac_fix(kube_api, controller_ns, tmp_path):
    ns, token = controller_ns
    kube_api.ok("POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "no-lease"}})
    other = kube_api.service_account_token_file(ns, "no-lease", tmp_path)
    with pytest.raises(StorageError, match=r"not allowed to get leases .*controller-rbac\.yaml"):
        _lock(kube_api, ns, other).acquire()
    # The Role grants the controller's Lease only: another name is refused too.
    with pytest.raises(StorageError, match="not allowed to get leases"):
        _lock(kube_api, ns, token, name="another-lease").acquire()


@pytest.mark.integration
def test_a_missing_namespace_is_named(kube_api, tmp_path):
    admin = kube_api.admin_token_file
    with pytest.raises(StorageError, match="the namespace no-such-ns does not exist"):
        StorageLock("r", path=kube_api.lease_uri("no-such-ns", LEASE, admin), heartbeat_s=1,
                    stale_after_s=5).acquire()


@pytest.mark.integration
def test_a_lease_of_another_program_is_not_taken(kube_api, controller_ns):
    ns, token = controller_ns
    kube_api.ok("POST", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": LEASE},
        "spec": {"holderIdentity": "kube-controller-manager", "leaseDurationSeconds": 15, "leaseTransitions": 3}})
    with pytest.raises(StorageError, match="is not a ctpipe lease"):
        _lock(kube_api, ns, token).acquire()
    assert _lease(kube_api, ns)["spec"]["holderIdentity"] == "kube-controller-manager"
