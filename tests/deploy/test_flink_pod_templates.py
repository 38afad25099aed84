"""The Flink pods as the Flink Kubernetes Operator renders them from deploy/k8s/flink-deployment.yaml.

The operator layers spec.podTemplate (common) under spec.jobManager.podTemplate and
spec.taskManager.podTemplate (FlinkConfigBuilder.applyPodTemplate -> FlinkUtils.mergePodTemplates).
``merge_pod_templates`` below follows that merge, read from the operator's source: objects merge
key by key, the override's scalars win, and arrays merge element by element by position, unless
``kubernetes.operator.pod-template.merge-arrays-by-name`` is true and every element of both arrays
has a ``name``, in which case elements merge by name and the result is the union, base order first.
The flag is read from the deployment's own flinkConfiguration (FlinkConfigBuilder.buildFrom applies
spec.flinkConfiguration before applyPodTemplate reads the option, a "dynamic" operator option).
The helper is checked against the examples of the operator's documentation
(docs/content/docs/custom-resource/pod-template.md, "Array Merging Behaviour") before it is used.
Then each container of the rendered pods is checked for what it needs.
"""
import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
MERGE_BY_NAME = "kubernetes.operator.pod-template.merge-arrays-by-name"
MAIN = "flink-main-container"  # Flink's own container in native mode
ARTIFACTS = "/var/beam-artifacts"


def merge_pod_templates(base, override, by_name):
    """FlinkUtils.mergePodTemplates(base, override, by_name): a new merged template."""
    if override is None:
        return copy.deepcopy(base)
    if base is None:
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    _merge_into(merged, copy.deepcopy(override), by_name)
    return merged


def _merge_into(to, frm, by_name):
    for key, value in frm.items():
        current = to.get(key)
        if isinstance(current, list) and isinstance(value, list):
            _merge_array(current, value, by_name)
        elif isinstance(current, dict):
            _merge_into(current, value, by_name)
        else:
            to[key] = value


def _names_defined(array):
    return all(isinstance(e, dict) and "name" in e for e in array)


def _merge_array(to, frm, by_name):
    if by_name and _names_defined(to) and _names_defined(frm):
        grouped = {e["name"]: e for e in to}
        for element in frm:
            if element["name"] in grouped:
                _merge_into(grouped[element["name"]], element, by_name)
            else:
                grouped[element["name"]] = element
        to[:] = list(grouped.values())
        return
    for i, element in enumerate(frm):
        if len(to) <= i:
            to.append(element)
        elif isinstance(to[i], dict) and isinstance(element, dict):
            _merge_into(to[i], element, by_name)
        else:
            to[i] = element


# The operator documentation's own examples of both modes.
_DOC_BASE = {"arr": [{"name": "a", "p1": "v1"}, {"name": "b", "p1": "v1"}]}
_DOC_OVERRIDE = {"arr": [{"name": "a", "p2": "v2"}, {"name": "c", "p2": "v2"}]}


def test_merge_helper_matches_the_operator_documentation():
    assert merge_pod_templates(_DOC_BASE, _DOC_OVERRIDE, by_name=False) == {
        "arr": [{"name": "a", "p1": "v1", "p2": "v2"}, {"name": "c", "p1": "v1", "p2": "v2"}]}
    assert merge_pod_templates(_DOC_BASE, _DOC_OVERRIDE, by_name=True) == {
        "arr": [{"name": "a", "p1": "v1", "p2": "v2"}, {"name": "b", "p1": "v1"}, {"name": "c", "p2": "v2"}]}
    # Without a name on every element, arrays merge by position even when by-name is on.
    assert merge_pod_templates({"arr": [{"x": 1}]}, {"arr": [{"name": "a"}]}, by_name=True) == {
        "arr": [{"x": 1, "name": "a"}]}
    assert merge_pod_templates(_DOC_BASE, None, by_name=True) == _DOC_BASE


def flink_deployment():
    docs = [d for d in yaml.safe_load_all((K8S / "flink-deployment.yaml").read_text()) if d]
    (fd,) = [d for d in docs if d["kind"] == "FlinkDeployment"]
    return fd


def rendered_pods(fd, by_name=None):
    """{"jobmanager": pod, "taskmanager": pod} as the operator merges them."""
    spec = fd["spec"]
    if by_name is None:
        by_name = spec["flinkConfiguration"].get(MERGE_BY_NAME, "false").lower() == "true"
    return {role: merge_pod_templates(spec.get("podTemplate"), spec[key].get("podTemplate"), by_name)
            for role, key in (("jobmanager", "jobManager"), ("taskmanager", "taskManager"))}


def container(pod, name):
    hits = [c for c in pod["spec"]["containers"] if c["name"] == name]
    assert len(hits) == 1, f"{len(hits)} containers named {name}: {[c['name'] for c in pod['spec']['containers']]}"
    return hits[0]


def env_names(c):
    return {e["name"] for e in c.get("env", [])}


def mounts(c):
    return {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}


def kafka_paths():
    cm = [d for d in yaml.safe_load_all((K8S / "configmap.yaml").read_text()) if d][0]
    kafka = yaml.safe_load(cm["data"]["ctpipe.yaml"])["source"]["kafka"]
    return kafka["sasl_username_env"], [kafka["sasl_password_file"], kafka["ssl_cafile"]]


def problems(pods, fd):
    """What each container of the rendered pods lacks; empty when the deployment works."""
    found = []
    flink_version = re.search(r"flink:(\d+\.\d+\.\d+)", fd["spec"]["image"]).group(1)
    user_env, kafka_files = kafka_paths()
    for role, pod in pods.items():
        names = [c["name"] for c in pod["spec"]["containers"]]
        if names.count(MAIN) != 1:
            found.append(f"{role}: {names.count(MAIN)} {MAIN} containers in {names}")
            continue
        main = container(pod, MAIN)
        plugins = {e.get("value") for e in main.get("env", []) if e["name"] == "ENABLE_BUILT_IN_PLUGINS"}
        if plugins != {f"flink-s3-fs-presto-{flink_version}.jar"}:
            found.append(f"{role}/{MAIN}: S3 plugin for Flink {flink_version} not enabled ({plugins})")
        if not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env_names(main):
            found.append(f"{role}/{MAIN}: no S3 credentials (checkpoints, HA)")
        if ARTIFACTS not in mounts(main):
            found.append(f"{role}/{MAIN}: staged artifacts not mounted at {ARTIFACTS}")
        if main.get("image") or main.get("args"):
            found.append(f"{role}/{MAIN}: got a sidecar's image/args ({main.get('image')})")
        volumes = {v["name"] for v in pod["spec"].get("volumes", [])}
        for c in pod["spec"]["containers"]:
            for path, volume in mounts(c).items():
                if volume not in volumes:
                    found.append(f"{role}/{c['name']}: mount {path} of undefined volume {volume}")
            if c["name"] != MAIN and "ENABLE_BUILT_IN_PLUGINS" in env_names(c):
                found.append(f"{role}/{c['name']}: got flink-main-container's Flink plugin setting")
        if role == "jobmanager":
            if "beam-job-server" not in names:
                found.append("jobmanager: no beam-job-server sidecar")
                continue
            js = container(pod, "beam-job-server")
            artifacts_dir = re.search(r"--artifacts-dir=(\S+)", " ".join(js["args"])).group(1)
            if artifacts_dir not in mounts(js):
                found.append(f"jobmanager/beam-job-server: --artifacts-dir {artifacts_dir} is not a mount")
            if "beam-expansion" not in names:
                found.append("jobmanager: no beam-expansion sidecar (source.kafka.expansion_service)")
                continue
            # The job server splits the Kafka source (lists partitions) when it translates the
            # unbounded graph; the expansion service builds KafkaIO's consumer config.
            for c in (js, container(pod, "beam-expansion")):
                if user_env not in env_names(c):
                    found.append(f"jobmanager/{c['name']}: no {user_env}")
                for f in kafka_files:
                    if not any(f.startswith(m.rstrip("/") + "/") for m in mounts(c)):
                        found.append(f"jobmanager/{c['name']}: {f} not mounted")
        else:
            if "beam-worker" not in names:
                found.append("taskmanager: no beam-worker sidecar")
                continue
            worker = container(pod, "beam-worker")
            if not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env_names(worker):
                found.append("taskmanager/beam-worker: no S3 credentials (storage root)")
            # Kafka is read in the SDK workers (ctpipe stream's ranges) and in the TaskManager JVM
            # (KafkaIO of the unbounded graph).
            for c in (worker, main):
                if user_env not in env_names(c):
                    found.append(f"taskmanager/{c['name']}: no {user_env}")
                for f in kafka_files:
                    if not any(f.startswith(m.rstrip("/") + "/") for m in mounts(c)):
                        found.append(f"taskmanager/{c['name']}: {f} not mounted")
    return found


def test_flink_deployment_merges_pod_templates_by_name():
    assert flink_deployment()["spec"]["flinkConfiguration"].get(MERGE_BY_NAME) == "true"


def test_every_container_gets_what_it_needs():
    fd = flink_deployment()
    assert problems(rendered_pods(fd), fd) == []


def test_positional_merge_would_break_it():
    """The check can fail: merged by position (the operator's default), flink-main-container's
    settings land on the sidecars, which is what the flag prevents."""
    fd = flink_deployment()
    found = problems(rendered_pods(fd, by_name=False), fd)
    assert any("beam-job-server" in p or "beam-worker" in p or MAIN in p for p in found), found
    pods = rendered_pods(fd, by_name=False)
    first = pods["jobmanager"]["spec"]["containers"][0]
    # flink-main-container's first env entry (the S3 plugin) merged into the job server's first one
    assert first["name"] == "beam-job-server"
    assert any(str(e.get("value", "")).startswith("flink-s3-fs-presto") for e in first["env"]), first["env"]


@pytest.mark.parametrize("drop", ["kafka-ca", "beam-artifacts"])
def test_a_missing_mount_is_reported(drop):
    fd = flink_deployment()
    for template in (fd["spec"]["podTemplate"], fd["spec"]["jobManager"]["podTemplate"],
                     fd["spec"]["taskManager"]["podTemplate"]):
        for c in template["spec"]["containers"]:
            c["volumeMounts"] = [m for m in c.get("volumeMounts", []) if m["name"] != drop]
    assert problems(rendered_pods(fd), fd)
