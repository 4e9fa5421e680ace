"""docker-compose.yml and its GPU override: valid compose files wired to the server's settings."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from service import settings as settings_module
from tests.deploy_tools import (
    ROOT,
    load_yaml,
    recserve_args,
    setting_default,
    settings_from_env,
    tool,
)
from training.pipeline import SYNTHETIC_PRESETS

COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
SERVER = "recserve"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


@pytest.fixture(scope="module")
def gpu_override() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE_GPU)
    return data


def dockerfile_targets() -> set[str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.MULTILINE))


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as set strings; a bare key (passed through from the shell) is
    left out, as compose does when the shell does not set it."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: str(v) for k, v in env.items() if v is not None}


def volume_mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read_only) for short-syntax volumes."""
    mounts: dict[str, tuple[str, bool]] = {}
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        mounts[target] = (source, mode == ["ro"])
    return mounts


def duration_s(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def prometheus_datasource_uids(node: Any) -> set[str]:
    """Fixed uids of the Prometheus datasources a dashboard refers to (`${var}`s excluded)."""
    found: set[str] = set()
    if isinstance(node, dict):
        source = node.get("datasource")
        if (
            isinstance(source, dict)
            and source.get("type", "prometheus") == "prometheus"
            and isinstance(source.get("uid"), str)
            and not source["uid"].startswith("$")
        ):
            found.add(source["uid"])
        for value in node.values():
            found |= prometheus_datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            found |= prometheus_datasource_uids(value)
    return found


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The repository path a bind mount shows at `container_path`."""
    path = PurePosixPath(container_path)
    for target, (source, _) in volume_mounts(service).items():
        if source.startswith("./") and (
            path == PurePosixPath(target) or PurePosixPath(target) in path.parents
        ):
            return ROOT / source / path.relative_to(target)
    raise AssertionError(f"{container_path} is not bind-mounted from the repository")


def test_compose_files_follow_the_compose_specification() -> None:
    result = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
            str(COMPOSE_GPU),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_server_environment_is_valid_settings(compose: dict[str, Any]) -> None:
    server = compose["services"][SERVER]
    settings = settings_from_env(environment(server))
    assert settings.host == "0.0.0.0"
    assert f"{settings.port}:{settings.port}" in server["ports"]
    source, read_only = volume_mounts(server)[str(settings.model_repository)]
    assert source in compose["volumes"], "the model repository is a named volume"
    assert read_only, "the server only reads the repository"
    assert server["build"]["target"] in dockerfile_targets()


def test_stop_grace_period_covers_the_drain(compose: dict[str, Any]) -> None:
    server = compose["services"][SERVER]
    settings = settings_from_env(environment(server))
    assert duration_s(server["stop_grace_period"]) > settings.shutdown_grace_s


def test_train_publishes_into_the_volume_the_server_polls(compose: dict[str, Any]) -> None:
    server = compose["services"][SERVER]
    train = compose["services"]["train"]
    repository = str(settings_from_env(environment(server)).model_repository)
    assert train["profiles"] == ["train"]
    args = recserve_args(train["command"])
    assert args.command == "train"
    assert args.data in SYNTHETIC_PRESETS, "compose trains on generated data"
    assert str(args.repository) == repository
    source, read_only = volume_mounts(train)[repository]
    assert source == volume_mounts(server)[repository][0]
    assert not read_only
    assert train["image"] == server["image"]
    assert train["build"] == server["build"]
    assert settings_from_env(environment(server)).poll_interval_s > 0


def test_prometheus_loads_the_repository_config_and_scrapes_the_server(
    compose: dict[str, Any],
) -> None:
    prometheus = compose["services"]["prometheus"]
    flags = dict(arg.removeprefix("--").partition("=")[::2] for arg in prometheus["command"])
    config_path = host_path(prometheus, flags["config.file"])
    assert config_path == ROOT / "deploy/prometheus/prometheus.yml"
    config = load_yaml(config_path)

    server_port = settings_from_env(environment(compose["services"][SERVER])).port
    targets = [
        target
        for job in config["scrape_configs"]
        if job.get("metrics_path", "/metrics") == "/metrics"
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert f"{SERVER}:{server_port}" in targets

    rule_files = [
        path
        for pattern in config.get("rule_files", [])
        for path in config_path.parent.glob(pattern)
    ]
    assert rule_files, "no rule file of prometheus.yml exists under deploy/prometheus"
    assert all(
        p.resolve().is_relative_to((ROOT / "deploy/prometheus").resolve()) for p in rule_files
    )


def test_grafana_is_provisioned_with_the_datasource_and_dashboard(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    prometheus_port = compose["services"]["prometheus"]["ports"][0].split(":")[-1]

    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in load_yaml(path)["datasources"]
    ]
    assert datasources
    url = urlsplit(datasources[0]["url"])
    assert (url.hostname, str(url.port)) == ("prometheus", prometheus_port)
    scrape_interval = load_yaml(ROOT / "deploy/prometheus/prometheus.yml")["global"][
        "scrape_interval"
    ]
    assert datasources[0]["jsonData"]["timeInterval"] == scrape_interval

    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in load_yaml(path)["providers"]
    ]
    assert providers, "no dashboard provider under deploy/grafana/provisioning/dashboards"
    dashboard_dirs = [host_path(grafana, p["options"]["path"]) for p in providers]
    dashboard = ROOT / "deploy/grafana/dashboards/recserve.json"
    assert dashboard.parent in dashboard_dirs

    provisioned = {source["uid"] for source in datasources}
    used = prometheus_datasource_uids(json.loads(dashboard.read_text(encoding="utf-8")))
    assert used <= provisioned, f"dashboard refers to datasources not provisioned: {used}"


def test_gpu_override_reserves_a_gpu_for_the_server(
    compose: dict[str, Any], gpu_override: dict[str, Any]
) -> None:
    assert set(gpu_override["services"]) <= set(compose["services"])
    server = gpu_override["services"][SERVER]
    assert server["build"]["target"] == "gpu"
    assert "gpu" in dockerfile_targets()
    assert server["image"].endswith(":gpu")
    devices = server["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    merged_env = {**environment(compose["services"][SERVER]), **environment(server)}
    assert settings_from_env(merged_env).provider == "cuda"


def test_cpu_server_takes_a_worker_per_core_and_the_gpu_server_one(
    compose: dict[str, Any], gpu_override: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 6)  # as the container sees them
    cpu_env = environment(compose["services"][SERVER])
    cpu = settings_from_env({**cpu_env, "RECSERVE_PROVIDER": "cpu"})
    assert (cpu.workers, cpu.ort_intra_op_threads) == (6, 1)
    gpu = settings_from_env({**cpu_env, **environment(gpu_override["services"][SERVER])})
    assert (gpu.workers, gpu.ort_intra_op_threads) == (1, 5)


def test_helpers_read_compose_syntax() -> None:
    assert duration_s("1m30s") == 90.0
    assert duration_s("45s") > setting_default("shutdown_grace_s")
    with pytest.raises(AssertionError):
        duration_s("45")
    service = {
        "volumes": ["./deploy/x:/etc/x:ro", "data:/data"],
        "environment": {"A": "1", "B": None},
    }
    assert volume_mounts(service) == {"/etc/x": ("./deploy/x", True), "/data": ("data", False)}
    assert environment(service) == {"A": "1"}
    assert host_path(service, "/etc/x/y.yml") == ROOT / "deploy/x/y.yml"
    dashboard = {
        "panels": [
            {"datasource": {"type": "prometheus", "uid": "prom"}},
            {"datasource": {"type": "prometheus", "uid": "${ds}"}},
            {"datasource": {"type": "grafana", "uid": "-- Grafana --"}},
        ]
    }
    assert prometheus_datasource_uids(dashboard) == {"prom"}
