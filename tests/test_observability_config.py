"""Prometheus rules and config and the Grafana dashboard, checked offline with promtool.

The dashboard's and rules' queries are also run by promtool against series shaped exactly like the
server's own exposition (``service.metrics.families.Metrics`` plus the process collector), so a
renamed metric or label fails here rather than as an empty panel. The dashboard imports into any
Grafana (its datasource is an import input, never a fixed uid), its traffic panels leave out
Prometheus' own scrapes and the health probes, and its panels read the recording rules rather than
recompute them.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.metrics import MetricWrapperBase

from service.metrics.families import Metrics
from tests.app_harness import serving
from tests.deploy_tools import ROOT, load_yaml, tool

PROMETHEUS = ROOT / "deploy/prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RECORDING = PROMETHEUS / "rules/recording.yml"
ALERTS = PROMETHEUS / "rules/alerts.yml"
RULE_TESTS = PROMETHEUS / "tests/alerts_test.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/recserve.json"
PROVIDER = ROOT / "deploy/grafana/provisioning/dashboards/recserve.yml"
DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
# Where the deployments probe the server; Prometheus' own scrape path is read from CONFIG.
PROBED_BY = ROOT / "k8s/base/deployment.yaml"

# The import input every Prometheus reference resolves through, and the variable that holds it.
DS_INPUT = "DS_PROMETHEUS"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_BUILTIN_REF = {"type": "grafana", "uid": "-- Grafana --"}

JOB = "recserve"
INSTANCE = "recserve:8000"
# One value per label of the server's families; a family with a new label fails until added here.
LABEL_VALUES = {
    "model": "demo", "version": "1", "endpoint": "score", "code": "200", "kind": "item", "gpu": "0",
}  # fmt: skip
# Families the server exports only on a GPU (NVML), labelled by `gpu`.
GPU_GAUGES = ("recserve_gpu_memory_used_bytes", "recserve_gpu_utilization_ratio")
# Grafana's built-in variables, replaced by values promtool accepts.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
# Values for the dashboard's own variables, matching the synthetic series.
VARIABLE_VALUES = {"instance": INSTANCE, "model": "demo", "version": "1"}
# Synthetic series: one sample every 15 s for an hour, queried at 50 minutes.
SCRAPE_INTERVAL = "15s"
SAMPLES = 240
EVAL_TIME = "50m"
MARK = "check_label_present"

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and",
    "or", "unless", "inf", "nan", "atan2",
}  # fmt: skip
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


@pytest.fixture(scope="module")
def promtool() -> str:
    return tool("promtool")


def run_promtool(promtool: str, *args: str) -> str:
    result = subprocess.run(
        [promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


# PromQL and dashboard helpers ------------------------------------------------------------------


def referenced_metrics(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and labels left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in IDENTIFIER.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        after = text[match.end() :].lstrip()[:1]
        if before.isalnum() or before in "._" or after == "(":
            continue  # part of a number or duration, or a function call
        if match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def substitute(text: str, values: dict[str, str]) -> str:
    """Replaces Grafana ``$var`` and ``${var}`` references; an unknown one raises KeyError."""
    return VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], text)


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title and refId, expression) for every panel target."""
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


def variable_selectors(board: dict[str, Any]) -> list[str]:
    """The series selectors of the dashboard's ``label_values(selector, label)`` variables."""
    selectors = []
    for variable in query_variables(board):
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", text.strip())
        assert match, f"variable {variable['name']}: unexpected query {text!r}"
        selectors.append(match.group(1))
    return selectors


def query_variables(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in board["templating"]["list"] if v["type"] != "datasource"]


def concrete(expr: str) -> str:
    return substitute(expr, {**GRAFANA_BUILTINS, **VARIABLE_VALUES})


def with_everything_selected(expr: str, board: dict[str, Any]) -> str:
    """``expr`` as the dashboard opens: every variable on All (its ``allValue``)."""
    everything = {v["name"]: v["allValue"] for v in query_variables(board)}
    return substitute(expr, {**GRAFANA_BUILTINS, **everything})


def values_of(node: Any, key: str) -> Iterator[Any]:
    """Every value of ``key`` anywhere in a dashboard (or part of one)."""
    if isinstance(node, dict):
        if key in node:
            yield node[key]
        for value in node.values():
            yield from values_of(value, key)
    elif isinstance(node, list):
        for value in node:
            yield from values_of(value, key)


def canonical(expr: str) -> str:
    """An expression with its label matchers, range lengths, spacing and grouping order erased:
    a panel that recomputes a recording rule over its own selection contains the rule's form."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = re.sub(
        r"\b(by|without|on|ignoring)\s*\(([^)]*)\)",
        lambda m: f"{m[1]}({','.join(sorted(label.strip() for label in m[2].split(',')))})",
        text,
    )
    return re.sub(r"\s+", "", text)


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules(RECORDING)}


def traffic_series() -> set[str]:
    """The request counter and every recorded series computed from it."""
    counter = "recserve_requests_total"
    derived = {r["record"] for r in rules(RECORDING) if counter in referenced_metrics(r["expr"])}
    return {counter} | derived


def traffic_queries(board: dict[str, Any]) -> list[str]:
    """The panels' queries over :func:`traffic_series`, as the dashboard opens."""
    queries = [with_everything_selected(expr, board) for _, expr in dashboard_queries(board)]
    return [query for query in queries if referenced_metrics(query) & traffic_series()]


def provisioned_prometheus() -> dict[str, Any]:
    """The Prometheus datasource the compose Grafana is provisioned with."""
    sources = [s for s in load_yaml(DATASOURCES)["datasources"] if s["type"] == "prometheus"]
    assert len(sources) == 1, sources
    source: dict[str, Any] = sources[0]
    return source


def not_traffic_paths() -> set[str]:
    """Paths requested by machines rather than clients: Prometheus' scrape and the probes."""
    scrape = {job.get("metrics_path", "/metrics") for job in load_yaml(CONFIG)["scrape_configs"]}
    probes = {
        probe["httpGet"]["path"]
        for container in load_yaml(PROBED_BY)["spec"]["template"]["spec"]["containers"]
        for key, probe in container.items()
        if key.endswith("Probe")
    }
    assert probes, f"no probe found in {PROBED_BY}"
    return scrape | probes


def endpoint_labels(paths: set[str]) -> set[str]:
    """The ``endpoint`` label the server gives requests for ``paths``, read from its counter."""

    async def request_each() -> set[str]:
        async with serving() as harness:
            for path in sorted(paths):
                await harness.client.get(path)
            return {
                sample.labels["endpoint"]
                for family in harness.state.metrics.registry.collect()
                for sample in family.samples
                if sample.name == "recserve_requests_total"
            }

    return asyncio.run(request_each())


# Series shaped like the server's exposition ----------------------------------------------------


def populated_metrics() -> Metrics:
    """The server's families, each with one child holding some observations."""
    metrics = Metrics()
    for family in vars(metrics).values():
        if not isinstance(family, MetricWrapperBase):
            continue
        labels = {name: LABEL_VALUES[name] for name in family._labelnames}  # no public accessor
        child = family.labels(**labels) if labels else family
        if isinstance(child, Counter):
            child.inc(3)
        elif isinstance(child, Gauge):
            child.set(1)
        elif isinstance(child, Histogram):
            for value in (0.003, 0.02, 0.2, 1.0, 7.0):
                child.observe(value)
        else:
            raise AssertionError(f"no sample recipe for {type(child).__name__}")
    return metrics


def extra_registry(exported: set[str]) -> CollectorRegistry:
    """The process metrics and the GPU gauges, each unless the server's registry holds them."""
    registry = CollectorRegistry()
    if "process_cpu_seconds_total" not in exported:
        ProcessCollector(registry=registry)
    for name in GPU_GAUGES:
        if name not in exported:
            Gauge(name, name, ("gpu",), registry=registry).labels(gpu="0").set(0.5)
    return registry


def exposition() -> list[tuple[str, str, dict[str, str], float]]:
    """(family type, sample name, labels, value) for every sample a scrape would return."""
    samples = [
        (family.type, sample.name, dict(sample.labels), sample.value)
        for family in populated_metrics().registry.collect()
        for sample in family.samples
    ]
    exported = {name for _, name, _, _ in samples}
    samples += [
        (family.type, sample.name, dict(sample.labels), sample.value)
        for family in extra_registry(exported).collect()
        for sample in family.samples
    ]
    return [s for s in samples if not s[1].endswith("_created")]


def input_series(
    samples: list[tuple[str, str, dict[str, str], float]] | None = None,
) -> list[dict[str, str]]:
    """promtool input series (the server's exposition unless ``samples``): counters and
    histograms grow linearly, gauges hold their value."""
    series = [{"series": f'up{{job="{JOB}",instance="{INSTANCE}"}}', "values": f"1x{SAMPLES}"}]
    for kind, name, labels, value in exposition() if samples is None else samples:
        labels = {**labels, "job": JOB, "instance": INSTANCE}
        selector = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
        growth = f"0+{value!r}x{SAMPLES}" if kind in ("counter", "histogram") else None
        series.append(
            {"series": f"{name}{{{selector}}}", "values": growth or f"{value!r}x{SAMPLES}"}
        )
    return series


def returns_data(expr: str) -> tuple[str, str]:
    """A check that ``expr`` yields at least one sample that is not NaN."""
    return f"count(({expr}) > -Inf) > bool 0", "{}"


def carries_label(expr: str, label: str) -> tuple[str, str]:
    """A check that every sample of ``expr`` has a non-empty ``label``."""
    marked = f'label_replace(({expr}) > -Inf, "{MARK}", "{label}", "{label}", ".+")'
    return f"count by ({MARK}) ({marked}) > bool 0", f'{{{MARK}="{label}"}}'


def yields_nothing(expr: str) -> tuple[str, None]:
    """A check that ``expr`` yields no sample, not even 0 (a ratio whose denominator counted what
    its numerator leaves out would show 0)."""
    return expr, None


def assert_checks(
    promtool: str,
    tmp_path: Path,
    checks: Sequence[tuple[str, str | None]],
    rule_files: list[Path],
    series: list[dict[str, str]] | None = None,
) -> None:
    """Runs (expression, expected labels) checks on the server-shaped series (or ``series``),
    each expecting one sample of value 1 with those labels, or none where the labels are None;
    promtool reports every check that fails."""
    tests = {
        "rule_files": [str(path) for path in rule_files],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": SCRAPE_INTERVAL,
                "input_series": input_series() if series is None else series,
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": EVAL_TIME,
                        "exp_samples": [] if labels is None else [{"labels": labels, "value": 1}],
                    }
                    for expr, labels in checks
                ],
            }
        ],
    }
    path = tmp_path / "checks_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    run_promtool(promtool, "test", "rules", str(path))


# Prometheus ------------------------------------------------------------------------------------


def test_prometheus_config_is_valid(promtool: str) -> None:
    output = run_promtool(promtool, "check", "config", str(CONFIG.relative_to(ROOT)))
    assert "2 rule files found" in output


def test_config_loads_every_rule_file_and_scrapes_the_server() -> None:
    config = load_yaml(CONFIG)
    loaded = {(CONFIG.parent / pattern).resolve() for pattern in config["rule_files"]}
    assert loaded == {RECORDING.resolve(), ALERTS.resolve()}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert [f"{JOB}:8000"] == jobs[JOB]["static_configs"][0]["targets"]


def test_rule_files_are_valid(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", str(RECORDING), str(ALERTS))


def test_rule_unit_tests_pass(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", str(RULE_TESTS.relative_to(ROOT)))


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = [
        case
        for group in load_yaml(RULE_TESTS)["tests"]
        for case in group.get("alert_rule_test", [])
    ]
    for alert in (rule["alert"] for rule in rules(ALERTS)):
        outcomes = {bool(c["exp_alerts"]) for c in cases if c["alertname"] == alert}
        assert outcomes == {True, False}, f"{alert}: needs a firing and a not-firing case"


def test_every_recording_rule_is_tested() -> None:
    tested = {
        name
        for group in load_yaml(RULE_TESTS)["tests"]
        for case in group.get("promql_expr_test", [])
        for name in referenced_metrics(case["expr"])
    }
    assert recorded_names() <= tested, f"untested: {sorted(recorded_names() - tested)}"


def test_recording_rules_return_data_for_the_server_series(promtool: str, tmp_path: Path) -> None:
    """Each recorded series exists and carries the labels its level names (``model_version:...``
    carries ``model`` and ``version``)."""
    checks = []
    for name in sorted(recorded_names()):
        checks.append(returns_data(name))
        checks += [carries_label(name, label) for label in name.split(":")[0].split("_")]
    assert_checks(promtool, tmp_path, checks, [RECORDING])


def test_jobs_selected_by_rules_and_dashboard_are_scraped() -> None:
    exprs = [rule["expr"] for rule in rules(ALERTS) + rules(RECORDING)]
    exprs += [expr for _, expr in dashboard_queries(dashboard())] + variable_selectors(dashboard())
    selected = {job for expr in exprs for job in re.findall(r'\bjob\s*=\s*"([^"]*)"', expr)}
    scraped = {job["job_name"] for job in load_yaml(CONFIG)["scrape_configs"]}
    assert selected
    assert selected <= scraped


# Grafana ---------------------------------------------------------------------------------------


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries(dashboard())
    assert queries
    group = {
        "name": "dashboard",
        "rules": [
            {"record": f"dashboard:query_{i}", "expr": concrete(expr)}
            for i, (_, expr) in enumerate(queries)
        ],
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}), encoding="utf-8")
    output = run_promtool(promtool, "check", "rules", str(path))
    assert f"{len(queries)} rules found" in output


def test_dashboard_queries_return_data_for_the_server_series(promtool: str, tmp_path: Path) -> None:
    """Every query yields samples, carrying each label its legend names (``{{model}}``), with one
    instance, model and version selected: a panel that filters a recorded series on a label its
    rule aggregates away (``instance``) finds nothing here."""
    board = dashboard()
    checks: list[tuple[str, str | None]] = [
        returns_data(concrete(selector)) for selector in variable_selectors(board)
    ]
    for panel in panels(board):
        for target in panel.get("targets", []):
            expr = concrete(target["expr"])
            checks.append(returns_data(expr))
            legend_labels = re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", ""))
            checks += [carries_label(expr, label) for label in legend_labels]
    assert_checks(promtool, tmp_path, checks, [RECORDING])


def test_traffic_queries_leave_out_scrapes_and_probes(promtool: str, tmp_path: Path) -> None:
    """With only Prometheus' scrapes and the health probes answered (2xx, 4xx and 5xx alike), no
    query over the request counter or a rule recorded from it yields a sample, not even 0, as the
    dashboard opens (every variable on All, which matches the empty model of these requests)."""
    labels = endpoint_labels(not_traffic_paths())
    assert "metrics" in labels and len(labels) >= 3, labels
    unversioned = {"model": "", "version": ""}
    machine_requests = [
        ("counter", "recserve_requests_total", {**unversioned, "endpoint": e, "code": code}, 3.0)
        for e in sorted(labels)
        for code in ("200", "404", "500", "503")
    ]
    queries = traffic_queries(dashboard())
    assert len(queries) >= 5, queries
    traffic = traffic_series()
    # The input is not empty: the same series unfiltered, through the rules, do count.
    checks: list[tuple[str, str | None]] = [
        returns_data(f"sum({name}) > 0") for name in sorted(traffic - {"recserve_requests_total"})
    ]
    checks += [yields_nothing(query) for query in queries]
    assert_checks(promtool, tmp_path, checks, [RECORDING], input_series(machine_requests))


def test_panels_read_the_recording_rules_rather_than_recompute_them() -> None:
    queries = dashboard_queries(dashboard())
    recomputed = [
        (where, rule["record"])
        for rule in rules(RECORDING)
        for where, expr in queries
        if canonical(rule["expr"]) in canonical(expr)
    ]
    assert not recomputed, f"read the recorded series instead: {recomputed}"
    read = {name for _, expr in queries for name in referenced_metrics(concrete(expr))}
    assert len(read & recorded_names()) >= 10, sorted(read & recorded_names())


def test_referenced_metrics_are_exported() -> None:
    board = dashboard()
    exprs = [rule["expr"] for rule in rules(ALERTS) + rules(RECORDING)]
    exprs += [concrete(expr) for _, expr in dashboard_queries(board)]
    exprs += [concrete(selector) for selector in variable_selectors(board)]
    referenced = {name for expr in exprs for name in referenced_metrics(expr)}

    exported = {name for _, name, _, _ in exposition()} | recorded_names() | {"up"}
    unknown = referenced - exported
    assert not unknown, f"not exported by the server: {sorted(unknown)}"
    assert any(name.startswith("recserve_") for name in referenced)


def test_dashboard_structure() -> None:
    board = dashboard()
    all_panels = list(panels(board))
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in all_panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["datasource"] == DATASOURCE_REF for t in panel["targets"]), panel["title"]
    for variable in query_variables(board):
        assert variable["datasource"] == DATASOURCE_REF, variable["name"]
    defined = {variable["name"] for variable in query_variables(board)}
    used = {
        m.group(1) or m.group(2)
        for text in [expr for _, expr in dashboard_queries(board)] + variable_selectors(board)
        for m in VARIABLE.finditer(text)
    }
    assert used - set(GRAFANA_BUILTINS) <= defined
    assert defined <= set(VARIABLE_VALUES), "give the new variable a value in VARIABLE_VALUES"


def test_dashboard_datasource_is_chosen_on_import() -> None:
    """Imported (Dashboards > Import), Grafana asks for ``DS_PROMETHEUS`` and writes the chosen
    uid wherever ``${DS_PROMETHEUS}`` stands: into the datasource variable every query goes
    through. Provisioned from a file, nothing is replaced, and the variable finds the provisioned
    datasource by the name it is given there."""
    board = dashboard()
    assert board["__inputs"] == [
        {
            "name": DS_INPUT,
            "label": "Prometheus",
            "description": board["__inputs"][0]["description"],
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    variables = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert len(variables) == 1
    variable = variables[0]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    assert variable["hide"] == 0, "visible: an operator with several Prometheus can switch"
    assert variable["current"]["value"] == f"${{{DS_INPUT}}}"
    assert variable["current"]["text"] == provisioned_prometheus()["name"]
    assert DATASOURCE_REF["uid"] == f"${{{variable['name']}}}"
    text = DASHBOARD.read_text(encoding="utf-8")
    assert text.count(f"${{{DS_INPUT}}}") == 1, "only the variable's value is the input"
    imported = json.loads(text.replace(f"${{{DS_INPUT}}}", "chosen-uid"))
    chosen = next(v for v in imported["templating"]["list"] if v["type"] == "datasource")
    assert chosen["current"]["value"] == "chosen-uid"


def test_no_datasource_uid_is_hard_coded() -> None:
    board = dashboard()
    refs = list(values_of(board, "datasource"))
    assert refs.count(DATASOURCE_REF) > len(dashboard_queries(board))
    assert all(ref in (DATASOURCE_REF, GRAFANA_BUILTIN_REF) for ref in refs), [
        ref for ref in refs if ref not in (DATASOURCE_REF, GRAFANA_BUILTIN_REF)
    ]
    inner = {key: value for key, value in board.items() if key != "uid"}  # the dashboard's own
    uids = {uid for uid in values_of(inner, "uid") if isinstance(uid, str)}
    assert uids == {DATASOURCE_REF["uid"], GRAFANA_BUILTIN_REF["uid"]}


def test_dashboard_lists_what_it_requires() -> None:
    board = dashboard()
    required = {(r["type"], r["id"]) for r in board["__requires"]}
    used = {("panel", p["type"]) for p in panels(board) if p["type"] != "row"}
    assert used | {("grafana", "grafana"), ("datasource", "prometheus")} == required


def test_provisioned_prometheus_is_the_default_datasource() -> None:
    source = provisioned_prometheus()
    assert source["isDefault"] is True
    assert source["name"] and source["uid"]


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_provider_reads_a_directory() -> None:
    providers = load_yaml(PROVIDER)["providers"]
    assert [p["type"] for p in providers] == ["file"]
    assert Path(providers[0]["options"]["path"]).is_absolute()


# Helpers ---------------------------------------------------------------------------------------


def test_referenced_metrics_skips_functions_labels_and_durations() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, model) (rate(a_bucket{code=~"5..", x="y z"}[5m])))'
        " / on (model) group_left b:rec:rate5m > 1e3 or c offset 15m unless absent(d)"
    )
    assert referenced_metrics(expr) == {"a_bucket", "b:rec:rate5m", "c", "d"}


def test_canonical_erases_selection_but_not_computation() -> None:
    rule = "sum by (model, version) (rate(x_total[5m]))"
    panel = 'sum by (version,model)(rate(x_total{model=~"$model", a="{b}"}[$__rate_interval])) / 2'
    assert canonical(rule) in canonical(panel)
    assert canonical(rule) not in canonical("sum by (model) (rate(x_total[5m]))")
    assert canonical(rule) not in canonical("sum by (model, version) (increase(x_total[5m]))")


def test_substitute_replaces_both_variable_forms() -> None:
    assert (
        substitute('x{m=~"$model"}[${__rate_interval}]', {"model": "demo", "__rate_interval": "1m"})
        == 'x{m=~"demo"}[1m]'
    )
    with pytest.raises(KeyError):
        substitute("$unknown", {})
