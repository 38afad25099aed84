"""deploy/k8s manifests: schema-valid, wired together, and free of literal secrets.

Built-in kinds are validated strictly (unknown fields fail) by kubernetes-validate against the
schemas of K8S_VERSION. The custom resources (FlinkDeployment of the Flink Kubernetes Operator,
ServiceMonitor of the Prometheus Operator) and kustomize's Kustomization are not in
kubernetes-validate's bundled schemas; they are checked against the minimal JSON schemas below,
which hold the fields the deployment relies on.
"""
import json
import os
import re
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests._cli import parses_as_ctpipe

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.31.0"
NAMESPACE = "ctpipe"

# Created on demand with kubectl create/apply -f, deliberately not in kustomization.yaml.
ON_DEMAND = {"backfill-job.yaml", "trainer-job.yaml", "controller-cronjob.yaml", "stream-unbounded-job.yaml"}
SECRET_NAMES = {"ctpipe-kafka", "ctpipe-kafka-ca", "ctpipe-s3"}

_CONTAINER = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "image": {"type": "string"}},
}
_POD_TEMPLATE = {
    "type": "object",
    "required": ["apiVersion", "kind", "spec"],
    "properties": {
        "apiVersion": {"const": "v1"},
        "kind": {"const": "Pod"},
        "spec": {"type": "object", "properties": {
            "containers": {"type": "array", "items": _CONTAINER}}},
    },
}
_RESOURCE = {
    "type": "object",
    "required": ["memory", "cpu"],
    "properties": {"memory": {"type": "string", "pattern": r"^\d+(m|Mi|Gi|g)$"},
                   "cpu": {"type": "number", "exclusiveMinimum": 0}},
    "additionalProperties": False,
}
_METADATA = {"type": "object", "required": ["name", "namespace"],
             "properties": {"name": {"type": "string"}, "namespace": {"const": NAMESPACE}}}
CRD_SCHEMAS = {
    ("flink.apache.org/v1beta1", "FlinkDeployment"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["image", "flinkVersion", "serviceAccount", "flinkConfiguration",
                             "jobManager", "taskManager"],
                "additionalProperties": False,
                "properties": {
                    "image": {"type": "string"},
                    "imagePullPolicy": {"type": "string"},
                    "flinkVersion": {"enum": ["v1_17", "v1_18", "v1_19"]},
                    "serviceAccount": {"type": "string"},
                    "mode": {"enum": ["native", "standalone"]},
                    "flinkConfiguration": {"type": "object",
                                           "additionalProperties": {"type": "string"}},
                    "podTemplate": _POD_TEMPLATE,
                    "job": {"type": "object"},
                    "jobManager": {"type": "object", "required": ["resource"],
                                   "additionalProperties": False,
                                   "properties": {"replicas": {"type": "integer", "minimum": 1},
                                                  "resource": _RESOURCE,
                                                  "podTemplate": _POD_TEMPLATE}},
                    "taskManager": {"type": "object", "required": ["resource"],
                                    "additionalProperties": False,
                                    "properties": {"replicas": {"type": "integer", "minimum": 1},
                                                   "resource": _RESOURCE,
                                                   "podTemplate": _POD_TEMPLATE}},
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": {"type": "object", "required": ["matchLabels"]},
                    "namespaceSelector": {"type": "object"},
                    "endpoints": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["port"], "additionalProperties": False,
                        "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                       "interval": {"type": "string", "pattern": r"^\d+[smh]$"},
                                       "scrapeTimeout": {"type": "string",
                                                         "pattern": r"^\d+[smh]$"},
                                       "honorLabels": {"type": "boolean"}}}},
                },
            },
        },
    },
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): {
        "type": "object",
        "required": ["apiVersion", "kind", "resources"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "namespace": {"const": NAMESPACE},
            "resources": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "images": {"type": "array", "items": {
                "type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "newName": {"type": "string"},
                               "newTag": {"type": "string"}}}},
            "labels": {"type": "array"},
        },
    },
}


def manifest_files():
    files = sorted(K8S.glob("*.yaml"))
    assert files, "no manifests in deploy/k8s"
    return files


def documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_documents():
    return [(p.name, d) for p in manifest_files() for d in documents(p)]


def find(kind, name=None):
    hits = [d for _, d in all_documents()
            if d.get("kind") == kind and (name is None or d["metadata"].get("name") == name)]
    assert hits, f"no {kind} {name or ''}"
    return hits[0] if name else hits


def pod_specs(doc):
    """Every pod spec inside a workload (Deployment, Job, CronJob, FlinkDeployment)."""
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return [spec["template"]["spec"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "FlinkDeployment":
        return [t["spec"] for t in (spec.get("podTemplate"),
                                    spec["jobManager"].get("podTemplate"),
                                    spec["taskManager"].get("podTemplate")) if t]
    return []


def containers(doc):
    return [c for ps in pod_specs(doc)
            for c in ps.get("containers", []) + ps.get("initContainers", [])]


# ------------------------------------------------------------------------------ schemas


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_schema_valid(path):
    docs = documents(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[key])
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_can_fail():
    bad_field = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "x"}, "dta": {"a": "b"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad_field, K8S_VERSION, strict=True)
    flink = json.loads(json.dumps(find("FlinkDeployment", "ctpipe-flink")))
    flink["spec"]["jobManager"]["resources"] = flink["spec"]["jobManager"].pop("resource")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(flink, CRD_SCHEMAS[("flink.apache.org/v1beta1", "FlinkDeployment")])


def test_every_kind_is_checked():
    """A document of a CRD kind without a schema here must not slip through unvalidated."""
    for name, doc in all_documents():
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CRD_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:  # pragma: no cover
            pytest.fail(f"{name}: {exc.message}; add a schema to CRD_SCHEMAS")


def test_namespaced_objects_are_in_the_ctpipe_namespace():
    for name, doc in all_documents():
        if doc["kind"] in ("Namespace", "Kustomization"):
            continue
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{name}: {doc['kind']}"


# ------------------------------------------------------------------------------ secrets

_SECRETISH = re.compile(r"(pass(word|wd)?|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)",
                        re.I)
# Keys that *name* a secret (a reference) rather than hold one.
_REFERENCE_KEY = re.compile(r"(_env|_file|Ref|Name|_name|_ref|KeyRef)$")


def literal_secrets(obj, path=""):
    """Paths where a manifest holds a secret value instead of a reference to one."""
    found = []
    if isinstance(obj, dict):
        if obj.get("kind") == "Secret" and "apiVersion" in obj:
            found.append(f"{path or '/'}: kind Secret in a manifest")
        # env entries: a secret-looking variable must come from valueFrom.secretKeyRef
        if set(obj) >= {"name", "value"} and isinstance(obj["name"], str) \
                and _SECRETISH.search(obj["name"]) and obj["value"] not in (None, ""):
            found.append(f"{path}: env {obj['name']} has a literal value")
        for key, value in obj.items():
            sub = f"{path}.{key}"
            if isinstance(key, str) and _SECRETISH.search(key) and not _REFERENCE_KEY.search(key) \
                    and isinstance(value, (str, int, float)) and not isinstance(value, bool) \
                    and str(value).strip():
                found.append(f"{sub}: literal value")
            found += literal_secrets(value, sub)
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            found += literal_secrets(item, f"{path}[{i}]")
    elif isinstance(obj, str) and "\n" in obj:
        # Embedded YAML (ConfigMap data such as ctpipe.yaml) is checked the same way.
        try:
            inner = yaml.safe_load(obj)
        except yaml.YAMLError:
            inner = None
        if isinstance(inner, (dict, list)):
            found += literal_secrets(inner, path)
    return found


def test_no_literal_secrets():
    problems = []
    for name, doc in all_documents():
        problems += [f"{name}{p}" for p in literal_secrets(doc)]
    assert not problems, problems
    text_re = re.compile(r"^[ \t]*-?[ \t]*(password|passwd|token|secret)[ \t]*:[ \t]*[^\s{|>#]",
                         re.I | re.M)
    for path in manifest_files():
        assert not text_re.search(path.read_text()), f"{path.name} has a literal secret"


def test_secret_check_can_fail():
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
           "data": {"ctpipe.yaml": "source:\n  kafka:\n    sasl_password: hunter2\n"}}
    assert literal_secrets(bad)
    env = {"spec": {"containers": [{"name": "c", "env": [{"name": "KAFKA_PASSWORD",
                                                          "value": "hunter2"}]}]}}
    assert literal_secrets(env)
    assert literal_secrets({"apiVersion": "v1", "kind": "Secret", "stringData": {"a": "b"}})
    assert not literal_secrets({"env": [{"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {
        "secretKeyRef": {"name": "ctpipe-s3", "key": "secret-access-key"}}}]})


def test_secrets_are_referenced_by_known_names():
    refs = set()

    def walk(obj):
        if isinstance(obj, dict):
            if "secretKeyRef" in obj:
                refs.add(obj["secretKeyRef"]["name"])
            if "secret" in obj and isinstance(obj["secret"], dict):
                refs.add(obj["secret"]["secretName"])
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)
    for _, doc in all_documents():
        walk(doc)
    assert refs == SECRET_NAMES
    readme = (ROOT / "deploy" / "README.md").read_text()
    for name in SECRET_NAMES:
        assert name in readme, f"deploy/README.md does not say how to create secret {name}"


# ------------------------------------------------------------------------------ wiring


def test_images_are_pinned():
    for name, doc in all_documents():
        images = [c["image"] for c in containers(doc) if "image" in c]
        if doc["kind"] == "FlinkDeployment":
            images.append(doc["spec"]["image"])
        for image in images:
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), \
                f"{name}: image {image} is not pinned to a tag"


def ctpipe_invocations():
    """(file, argv) of every container that runs the ctpipe image's entrypoint."""
    out = []
    for name, doc in all_documents():
        for c in containers(doc):
            if c.get("image", "").split(":")[0].endswith("/ctpipe") or \
                    c.get("image", "").split(":")[0] == "ctpipe":
                if c.get("command"):
                    script = " ".join(c.get("args", []))
                    for m in re.finditer(r"exec ctpipe ([^\n]+)", script):
                        out.append((name, m.group(1).split()))
                else:
                    out.append((name, c["args"]))
    return out


def test_ctpipe_commands_are_real_subcommands():
    invocations = ctpipe_invocations()
    assert {f for f, _ in invocations} >= {"stream-job.yaml", "controller-cronjob.yaml", "controller-deployment.yaml",
                                           "backfill-job.yaml", "trainer-job.yaml", "stream-unbounded-job.yaml"}
    for name, argv in invocations:
        assert parses_as_ctpipe(argv), f"{name}: `ctpipe {' '.join(argv)}` is not a valid ctpipe command line"
        assert "--config" in argv and argv[argv.index("--config") + 1] == "/etc/ctpipe/ctpipe.yaml"


def test_stream_job():
    dep = find("Deployment", "ctpipe-stream")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    argv = c["args"]
    assert argv[:3] == ["stream", "--interval", "60"]
    runner_config = argv[argv.index("--runner-config") + 1]
    assert runner_config == "runner_configs/flink.yaml"
    # Every ${VAR} the runner config needs is set in the pod.
    values = yaml.safe_load((ROOT / runner_config).read_text()).values()
    needed = {v for value in values if isinstance(value, str)
              for v in re.findall(r"\$\{([A-Za-z_]\w*)\}", value)}
    assert needed and needed <= {e["name"] for e in c["env"]}
    # The metrics Service selects this pod and names the port the ServiceMonitor scrapes.
    svc = find("Service", "ctpipe-stream-metrics")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert {"name": "metrics", "containerPort": 9464} in c["ports"]
    sm = find("ServiceMonitor", "ctpipe-stream")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
    # The mounted config and secret paths are the ones ctpipe.yaml names.
    cfg = yaml.safe_load(find("ConfigMap", "ctpipe-config")["data"]["ctpipe.yaml"])
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    kafka = cfg["source"]["kafka"]
    for f in (kafka["sasl_password_file"], kafka["ssl_cafile"]):
        assert any(f.startswith(m + "/") for m in mounts), f
    assert kafka["sasl_username_env"] in {e["name"] for e in c["env"]}
    assert cfg["metrics"]["port"] == 9464


def test_unbounded_stream_job():
    """`ctpipe stream --unbounded` with the streaming runner config: every ${VAR} it needs set to
    the Flink services, the Kafka secrets at the paths ctpipe.yaml names, and never resubmitted
    automatically (a second job on the same topic and root)."""
    job = find("Job", "ctpipe-stream-unbounded")
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    argv = c["args"]
    assert argv[:2] == ["stream", "--unbounded"]
    runner_config = argv[argv.index("--runner-config") + 1]
    assert runner_config == "runner_configs/flink-streaming.yaml"
    runner = yaml.safe_load((ROOT / runner_config).read_text())
    assert runner["streaming"] is True and runner["runner"] == "FlinkRunner"
    needed = {v for value in runner.values() if isinstance(value, str)
              for v in re.findall(r"\$\{([A-Za-z_]\w*)\}", value)}
    env = {e["name"]: e.get("value") for e in c["env"]}
    micro = {e["name"]: e.get("value") for e in
             find("Deployment", "ctpipe-stream")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert needed and all(env.get(v) and env[v] == micro[v] for v in needed), (needed, env)
    cfg = yaml.safe_load(find("ConfigMap", "ctpipe-config")["data"]["ctpipe.yaml"])
    kafka = cfg["source"]["kafka"]
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    for f in (kafka["sasl_password_file"], kafka["ssl_cafile"]):
        assert any(f.startswith(m + "/") for m in mounts), f
    assert kafka["sasl_username_env"] in env
    # The attached driver's /metrics: served on metrics.port, which the stream's ServiceMonitor
    # scrapes through this job's Service.
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"]
    assert port == cfg["metrics"]["port"]
    assert job["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    svc = find("Service", "ctpipe-stream-unbounded-metrics")
    assert svc["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    sm = find("ServiceMonitor", "ctpipe-stream")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}


def _expansion_flags_of_services_sh() -> set:
    """The flags scripts/services.sh starts the local expansion service with (start_expansion)."""
    text = (ROOT / "scripts" / "services.sh").read_text()
    body = text[text.index("start_expansion() {"):]
    body = body[:body.index("\n}\n")]
    line = body[body.index("org.apache.beam.sdk.expansion.service.ExpansionService"):].split(">>")[0]
    return {f for f in line.split() if f.startswith("--")}


def test_kafka_expansion_service_is_wired():
    """source.kafka.expansion_service reaches, through the job-server Service, a container that
    runs Beam's Java ExpansionService from the job server's own image (the KafkaIO classes the
    job server stages to the TaskManagers) with the flags the local tests prove
    (scripts/services.sh: EMBEDDED environment, use_deprecated_read); the job server's built-in
    expansion service (started without options: Docker environment) is not what it reaches."""
    cfg = yaml.safe_load(find("ConfigMap", "ctpipe-config")["data"]["ctpipe.yaml"])
    host, port = cfg["source"]["kafka"]["expansion_service"].rsplit(":", 1)
    svc = find("Service", "ctpipe-flink-jobserver")
    assert host == f"{svc['metadata']['name']}.{NAMESPACE}.svc"
    (svc_port,) = [p for p in svc["spec"]["ports"] if p["port"] == int(port)]
    fd = find("FlinkDeployment", "ctpipe-flink")
    jm = fd["spec"]["jobManager"]["podTemplate"]
    assert svc["spec"]["selector"].items() <= {**jm["metadata"]["labels"], "app": fd["metadata"]["name"],
                                               "component": "jobmanager"}.items()
    serving = [c for c in jm["spec"]["containers"] for p in c.get("ports", [])
               if p["name"] == svc_port["targetPort"] or p["containerPort"] == svc_port["targetPort"]]
    assert [c["name"] for c in serving] == ["beam-expansion"]
    (expansion,) = serving
    (js,) = [c for c in jm["spec"]["containers"] if c["name"] == "beam-job-server"]
    assert expansion["image"] == js["image"]
    argv = expansion["command"] + expansion.get("args", [])
    main = argv.index("org.apache.beam.sdk.expansion.service.ExpansionService")
    assert argv[main - 2:main] == ["-cp", "/opt/apache/beam/jars/*"]
    assert int(argv[main + 1]) == [p["containerPort"] for p in expansion["ports"]][0]
    flags = _expansion_flags_of_services_sh()
    assert flags == {"--defaultEnvironmentType=EMBEDDED", "--experiments=use_deprecated_read"}
    assert set(argv[main + 2:]) == flags
    builtin = int(re.search(r"--expansion-port=(\d+)", " ".join(js["args"])).group(1))
    assert builtin not in [p["port"] for p in svc["spec"]["ports"]]
    assert builtin not in [p["containerPort"] for c in jm["spec"]["containers"] for p in c.get("ports", [])]


def test_controller_cronjob():
    """The CronJob variant: one `controller --once` check per slot, never two at a time; the
    decisions (exit 10: rejected, 5: another controller leads, 2: bad config) are not retried."""
    cj = find("CronJob", "ctpipe-controller-once")
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    job = cj["spec"]["jobTemplate"]["spec"]
    c = job["template"]["spec"]["containers"][0]
    assert c["args"][:2] == ["controller", "--once"] and "--json" in c["args"]
    fail_job = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert set(fail_job[0]["onExitCodes"]["values"]) == {2, 5, 10}
    assert "controller-cronjob.yaml" not in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]


def test_controller_deployment():
    """Two replicas of the long-running controller, one leader through the coordination.k8s.io
    Lease of controller.lease, as the service account whose Role allows that Lease and nothing else."""
    dep = find("Deployment", "ctpipe-controller")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = dep["spec"]["template"]["spec"]
    account = pod["serviceAccountName"]
    assert pod["automountServiceAccountToken"] is True  # the token the Lease requests carry
    assert find("ServiceAccount", account)["automountServiceAccountToken"] is True
    cronjob_pod = find("CronJob", "ctpipe-controller-once")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert cronjob_pod["serviceAccountName"] == account and cronjob_pod["automountServiceAccountToken"] is True
    # Only the controller's pods mount a token: every other pod runs without one.
    others = [(n, d["metadata"]["name"]) for n, d in all_documents() for ps in pod_specs(d)
              if ps.get("automountServiceAccountToken") is not False and ps.get("serviceAccountName") != account
              and d["kind"] != "FlinkDeployment"]
    assert not others, others
    cfg = yaml.safe_load(find("ConfigMap", "ctpipe-config")["data"]["ctpipe.yaml"])
    from core.kube_lease import parse
    from pipeline.config import config_from_dict
    from pipeline.typed_config import duration_ms

    config = config_from_dict(cfg)  # the controller section is a valid one
    lease = parse(config.controller.lease_path(config.storage.root),
                  environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"})  # in the pod: its own API server
    assert lease.namespace == NAMESPACE
    assert lease.token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    # The RoleBinding gives that account the Role, and the Role exactly the Lease verbs the store uses.
    binding = find("RoleBinding", "ctpipe-controller-lease")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    role = find("Role", binding["roleRef"]["name"])
    granted = {(verb, name) for rule in role["rules"] for verb in rule["verbs"]
               for name in rule.get("resourceNames", ["*"])
               if rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"]}
    assert granted == {("create", "*"), ("get", lease.name), ("update", lease.name)}
    assert len(role["rules"]) == 2  # nothing else
    # The grace period lets a run in flight finish and release the lease after SIGTERM.
    assert pod["terminationGracePeriodSeconds"] * 1000 > 10 * duration_ms(config.controller.lease_ttl)
    c = pod["containers"][0]
    assert c["args"][0] == "controller" and "--once" not in c["args"]
    cfg = yaml.safe_load(find("ConfigMap", "ctpipe-config")["data"]["ctpipe.yaml"])
    from pipeline.config import config_from_dict
    from pipeline.typed_config import duration_ms

    config = config_from_dict(cfg)  # the controller section is a valid one
    assert config.storage.root.startswith("s3://")  # the leader lease lives there (conditional PUTs)
    # The grace period lets a run in flight finish and release the lease after SIGTERM.
    assert pod["terminationGracePeriodSeconds"] * 1000 > 10 * duration_ms(config.controller.lease_ttl)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts[config.training.backup_dir] == "train-backup"
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claims["train-backup"] == find("PersistentVolumeClaim", "ctpipe-train-backup")["metadata"]["name"]
    assert {"name": "metrics", "containerPort": config.metrics.port} in c["ports"]
    svc = find("Service", "ctpipe-controller-metrics")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    sm = find("ServiceMonitor", "ctpipe-controller")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert {"controller-deployment.yaml", "controller-rbac.yaml", "train-backup-pvc.yaml"} <= set(kustomization)


def test_flink_deployment_matches_runner_config():
    fd = find("FlinkDeployment", "ctpipe-flink")
    conf = fd["spec"]["flinkConfiguration"]
    assert conf["high-availability.type"] == "kubernetes" and conf["high-availability.storageDir"]
    assert conf["state.checkpoints.dir"] and conf["execution.checkpointing.interval"]
    runner = yaml.safe_load((ROOT / "runner_configs" / "flink.yaml").read_text())
    assert fd["spec"]["flinkVersion"] == "v" + runner["flink_version"].replace(".", "_")
    assert f":{runner['flink_version']}" in fd["spec"]["image"] or \
        f"flink:{runner['flink_version']}." in fd["spec"]["image"]
    jm = fd["spec"]["jobManager"]["podTemplate"]["spec"]["containers"]
    js = [c for c in jm if c["name"] == "beam-job-server"][0]
    flink_tag = runner["flink_version"]
    assert js["image"] == f"apache/beam_flink{flink_tag}_job_server:2.68.0"
    job_port = int(re.search(r"--job-port=(\d+)", " ".join(js["args"])).group(1))
    svc = find("Service", "ctpipe-flink-jobserver")
    assert job_port in [p["port"] for p in svc["spec"]["ports"]]
    stream_env = {e["name"]: e.get("value") for e in
                  find("Deployment", "ctpipe-stream")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert stream_env["CTPIPE_FLINK_JOB_ENDPOINT"] == f"ctpipe-flink-jobserver.{NAMESPACE}.svc:{job_port}"
    assert stream_env["CTPIPE_FLINK_MASTER"].startswith(f"{fd['metadata']['name']}-rest.")
    # The SDK worker pool sidecar listens where environment_config points.
    tm = fd["spec"]["taskManager"]["podTemplate"]["spec"]["containers"]
    worker = [c for c in tm if c["name"] == "beam-worker"][0]
    assert "--worker_pool" in worker["args"]
    host, port = runner["environment_config"].split(":")
    assert runner["environment_type"] == "EXTERNAL" and host == "localhost"
    assert int(port) in [p["containerPort"] for p in worker["ports"]]


def test_trainer_tf_config(tmp_path):
    """Run the trainer's start script with a stand-in `ctpipe` and check TF_CONFIG per index."""
    job = find("Job", "ctpipe-trainer")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    pod = spec["template"]["spec"]
    svc = find("Service", "ctpipe-trainer")
    assert svc["spec"]["clusterIP"] == "None" and pod["subdomain"] == svc["metadata"]["name"]
    c = pod["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    assert env["TRAINER_JOB"] == job["metadata"]["name"]
    assert int(env["TRAINER_PORT"]) in [p["port"] for p in svc["spec"]["ports"]]
    fake = tmp_path / "ctpipe"
    fake.write_text('#!/bin/sh\nprintf "%s" "$TF_CONFIG" > "$OUT_FILE"\necho "$@" >> "$ARGS_FILE"\n')
    fake.chmod(0o755)
    configs = []
    for index in range(spec["completions"]):
        out = tmp_path / f"tf_config_{index}.json"
        res = subprocess.run(c["command"] + c["args"], capture_output=True, text=True, timeout=30,
                             env={**env, "PATH": f"{tmp_path}:{os.environ['PATH']}",
                                  "JOB_COMPLETION_INDEX": str(index), "OUT_FILE": str(out),
                                  "ARGS_FILE": str(tmp_path / "args")})
        assert res.returncode == 0, res.stderr
        configs.append(json.loads(out.read_text()))
    workers = [f"ctpipe-trainer-{i}.ctpipe-trainer:{env['TRAINER_PORT']}" for i in range(2)]
    for index, cfg in enumerate(configs):
        assert cfg == {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    assert (tmp_path / "args").read_text().split("\n")[0].split()[0] == "train"
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {}), "GPU is optional (commented)"


def test_backfill_job_template():
    job = find("Job")
    backfill = [j for j in job if j["metadata"].get("generateName") == "ctpipe-backfill-"][0]
    c = backfill["spec"]["template"]["spec"]["containers"][0]
    argv = c["args"]
    assert argv[0] == "backfill"
    env = {e["name"]: e.get("value") for e in c["env"]}
    for flag, var in (("--from", "BACKFILL_FROM"), ("--to", "BACKFILL_TO")):
        assert argv[argv.index(flag) + 1] == f"$({var})"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", env[var])
    assert env["BACKFILL_FROM"] < env["BACKFILL_TO"]


def test_kustomization_lists_every_long_lived_manifest():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in manifest_files()} - {"kustomization.yaml"}
    listed = set(kust["resources"])
    assert listed <= files, f"kustomization lists missing files: {listed - files}"
    assert listed | ON_DEMAND == files and not listed & ON_DEMAND
    used = {c["image"].split(":")[0] for _, d in all_documents() for c in containers(d)
            if "image" in c}
    assert {i["name"] for i in kust["images"]} <= used


def test_config_map_is_a_valid_ctpipe_config():
    raw = find("ConfigMap", "ctpipe-config")["data"]["ctpipe.yaml"]
    data = yaml.safe_load(raw)
    assert data["metrics"]["pushgateway"] and data["storage"]["root"]
    # The real loader rejects unknown keys by their full path.
    from pipeline.config import config_from_dict

    cfg = config_from_dict(data)
    assert cfg.source.kafka.sasl_password_file.startswith("/var/run/secrets/")


# ------------------------------------------------------------------------------ training runs


def training_pods():
    """(file, Job spec, pod spec) of the CronJob's Job and the distributed trainer Job."""
    cj = find("CronJob", "ctpipe-controller-once")
    job = find("Job", "ctpipe-trainer")
    return [("controller-cronjob.yaml", cj["spec"]["jobTemplate"]["spec"],
             cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
            ("trainer-job.yaml", job["spec"], job["spec"]["template"]["spec"])]


def test_a_gate_rejection_is_not_retried():
    """Exit 10 is a decision: the Job ends at once instead of training again (backoffLimit)."""
    from core.errors import EXIT_CONFIG, EXIT_GATE_REJECTED

    for name, job, pod in training_pods():
        assert pod["restartPolicy"] == "Never", name  # podFailurePolicy requires it
        (trainer,) = pod["containers"]
        rules = job["podFailurePolicy"]["rules"]
        fail_now = [r for r in rules if r["action"] == "FailJob" and "onExitCodes" in r]
        assert fail_now, f"{name}: no FailJob rule"
        codes = fail_now[0]["onExitCodes"]
        assert codes["operator"] == "In" and codes["containerName"] == trainer["name"], name
        assert {EXIT_GATE_REJECTED, EXIT_CONFIG} <= set(codes["values"]), name
        # An evicted or preempted pod is recreated without spending a retry.
        assert any(r["action"] == "Ignore" and r.get("onPodConditions") == [
            {"type": "DisruptionTarget", "status": "True"}] for r in rules), name
        assert job["backoffLimit"] >= 1, f"{name}: real failures still get a retry"


def test_training_backups_outlive_the_pod():
    """BackupAndRestore state is on a shared persistent volume, not the pod's /tmp."""
    cfg = yaml.safe_load(find("ConfigMap", "ctpipe-config")["data"]["ctpipe.yaml"])
    backup_dir = cfg["training"]["backup_dir"]
    pvcs = {d["metadata"]["name"]: d for d in find("PersistentVolumeClaim")}
    for name, _, pod in training_pods():
        (trainer,) = pod["containers"]
        mount = [m for m in trainer["volumeMounts"] if backup_dir == m["mountPath"]
                 or backup_dir.startswith(m["mountPath"].rstrip("/") + "/")]
        assert mount, f"{name}: training.backup_dir {backup_dir} is not on a mounted volume"
        volume = [v for v in pod["volumes"] if v["name"] == mount[0]["name"]][0]
        claim = volume.get("persistentVolumeClaim", {}).get("claimName")
        assert claim in pvcs, f"{name}: {backup_dir} is on {volume}, not a PersistentVolumeClaim"
        # Both workers of the distributed Job, on any nodes, see the same folder.
        assert pvcs[claim]["spec"]["accessModes"] == ["ReadWriteMany"]
    # the claim is long-lived: in the kustomization, not in an on-demand Job's file
    assert "train-backup-pvc.yaml" in {n for n, d in all_documents()
                                       if d["kind"] == "PersistentVolumeClaim"} - ON_DEMAND, "the claim is long-lived"


def test_the_driver_stages_artifacts_through_the_job_server_service():
    """The job server advertises 0.0.0.0:<artifact port>; the driver gets the Service address."""
    fd = find("FlinkDeployment", "ctpipe-flink")
    js = [c for c in fd["spec"]["jobManager"]["podTemplate"]["spec"]["containers"]
          if c["name"] == "beam-job-server"][0]
    args = " ".join(js["args"])
    assert "--job-host=0.0.0.0" in args
    artifact_port = int(re.search(r"--artifact-port=(\d+)", args).group(1))
    svc = find("Service", "ctpipe-flink-jobserver")
    assert artifact_port in [p["port"] for p in svc["spec"]["ports"]]
    runner = yaml.safe_load((ROOT / "runner_configs" / "flink.yaml").read_text())
    var = re.fullmatch(r"\$\{(\w+)\}", runner["artifact_endpoint"]).group(1)
    env = {e["name"]: e.get("value") for e in
           find("Deployment", "ctpipe-stream")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[var] == f"ctpipe-flink-jobserver.{NAMESPACE}.svc:{artifact_port}"


# ------------------------------------------------------------------------------ a real API server

# Kinds of the operators' CRDs, which the test API server does not have (no operator is installed).
_NOT_BUILT_IN = {"FlinkDeployment", "ServiceMonitor"}


def _collection(kube_api, doc) -> str:
    """The REST collection of ``doc``'s kind, found through the server's discovery documents."""
    group_version = doc["apiVersion"]
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    resources = kube_api.ok("GET", base)["resources"]
    resource = next(r for r in resources if r["kind"] == doc["kind"] and "/" not in r["name"])
    ns = doc["metadata"].get("namespace")
    return f"{base}/namespaces/{ns}/{resource['name']}" if resource["namespaced"] else f"{base}/{resource['name']}"


@pytest.mark.integration
def test_the_manifests_pass_a_server_side_dry_run(kube_api):
    """Every built-in object of deploy/k8s, on-demand Jobs included, is POSTed with dryRun=All to a
    real kube-apiserver: its own validation, defaulting and admission (RBAC objects included) accept
    them, and nothing is stored."""
    docs = [(name, d) for name, d in all_documents() if d["kind"] not in _NOT_BUILT_IN | {"Kustomization"}]
    namespace = [d for _, d in docs if d["kind"] == "Namespace"]
    assert len(namespace) == 1
    code, reply = kube_api.request("POST", "/api/v1/namespaces?dryRun=All", namespace[0])
    assert code == 201, reply.get("message")
    code, reply = kube_api.request("GET", f"/api/v1/namespaces/{NAMESPACE}")
    if code == 404:  # a dry run stores nothing: the namespaced objects need it for real
        kube_api.create_namespace(NAMESPACE)
    refused = []
    kinds = set()
    for name, doc in docs:
        if doc["kind"] == "Namespace":
            continue
        code, reply = kube_api.request("POST", _collection(kube_api, doc) + "?dryRun=All&fieldValidation=Strict", doc)
        kinds.add(doc["kind"])
        if code != 201:
            refused.append(f"{name}: {doc['kind']} {doc['metadata']['name']}: HTTP {code} {reply.get('message')}")
    assert not refused, "\n".join(refused)
    assert {"Deployment", "CronJob", "Job", "ConfigMap", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    code, _ = kube_api.request("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/ctpipe-controller")
    assert code == 404  # the dry run stored nothing


@pytest.mark.integration
def test_the_dry_run_can_fail(kube_api):
    bad = json.loads(json.dumps(find("Deployment", "ctpipe-controller")))
    bad["spec"]["template"]["metadata"]["labels"] = {"app.kubernetes.io/name": "something-else"}  # selector mismatch
    code, _ = kube_api.request("GET", f"/api/v1/namespaces/{NAMESPACE}")
    if code == 404:
        kube_api.create_namespace(NAMESPACE)
    code, reply = kube_api.request("POST", _collection(kube_api, bad) + "?dryRun=All", bad)
    assert code == 422 and "selector" in reply["message"]
