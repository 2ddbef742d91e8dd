"""The proxy's and the monitoring profile's configuration, checked against what the code serves.

Every metric the Grafana dashboard queries must be one the backend or the OCR service serves on
its management port's /metrics, both scraped in-process (a renamed metric would leave a panel
empty without an error); Prometheus must scrape the ports both serve /metrics on; the proxy must
route to the backend's public port only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backend.app import build_services, create_management_app
from backend.db import migrate
from backend.deps import Services
from backend.settings import Settings
from backend.training.models import RunStatus, TrainingKind, TrainingRun
from backend.users.models import Role
from ocr_service import app as ocr_app
from tests.conftest import make_settings
from tests.support import compose
from tests.support.fake_engine import ENGINE

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "familienarchiv.json"
# What the issue asks the dashboard to show, each by a word its panel's title must have.
TOPICS = ("breaker", "retries", "latency", "pages", "jobs by status", "training runs")
# What the OCR service's own panels must show (its titles say "(OCR service)").
OCR_TOPICS = ("pages read per minute", "page seconds", "refused", "training jobs", "workers")
PROMQL_WORDS = {"sum", "max", "min", "avg", "by", "rate", "histogram_quantile", "le", "increase", "without"}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    folder = tmp_path_factory.mktemp("monitoring")
    settings = Settings(database_url=f"sqlite:///{folder}/backend.db", storage_dir=folder / "storage")
    services = build_services(settings)
    migrate(services.db.engine)
    yield services
    services.db.dispose()


@pytest.fixture(scope="module")
def ocr_management(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The OCR service's management app over its real services (workers not started: the
    registry's families are all there without them)."""
    folder = tmp_path_factory.mktemp("ocr-monitoring")
    settings = make_settings(folder / "models", training_dir=folder / "training", workers=1)
    return ocr_app.create_management_app(ocr_app.build_services(settings, ENGINE))


def _scraped_names(management: FastAPI) -> set[str]:
    """Every series name a management app's /metrics serves, with the suffixes Prometheus sees
    (a labelled family with no series yet is served as its HELP and TYPE only)."""
    response = TestClient(management).get("/metrics")
    assert response.status_code == 200
    names = set()
    for family in text_string_to_metric_families(response.text):
        names.add(family.name)
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ())}
        names |= {sample.name for sample in family.samples}
    return names


def _served_names(services: Services) -> set[str]:
    return _scraped_names(create_management_app(services))


def _expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _metric_names(expression: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expression)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_labels))
    labels = set(re.findall(r"by \(([^)]*)\)", expression))
    label_names = {label.strip() for group in labels for label in group.split(",")}
    return words - PROMQL_WORDS - label_names


def test_every_dashboard_query_names_metrics_one_of_the_services_serves(
    services: Services, ocr_management: FastAPI
) -> None:
    backend, ocr = _served_names(services), _scraped_names(ocr_management)
    # Distinct names: a query summing a name both served would count twice.
    assert not backend & ocr
    queried = set()
    for expression in _expressions():
        names = _metric_names(expression)
        assert names, f"no metric in {expression}"
        assert names <= backend or names <= ocr, f"{expression}: {sorted(names - backend - ocr)} are not served"
        queried |= names
    # The OCR service's own metrics are on the dashboard, not only the backend's view of it.
    assert {"ocr_service_pages_total", "ocr_service_page_seconds_bucket", "ocr_service_refusals_total"} <= queried
    assert {"ocr_service_training_jobs", "ocr_service_workers_alive"} <= queried


def test_the_metric_name_reader_is_not_blind() -> None:
    assert _metric_names('sum by (kind) (rate(resilience4j_retry_calls_total{name="ocr"}[5m]))') == {
        "resilience4j_retry_calls_total"
    }


def test_the_dashboard_shows_what_an_operator_needs() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in TOPICS:
        assert topic in titles, f"no panel on {topic}"
    ocr_titles = " | ".join(
        panel["title"].lower() for panel in dashboard["panels"] if panel["title"].endswith("(OCR service)")
    )
    for topic in OCR_TOPICS:
        assert topic in ocr_titles, f"no panel on the OCR service's {topic}"
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [source] = datasource["datasources"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"]
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "familienarchiv.yml").read_text())
    grafana = compose.resolved(compose.REQUIRED)["services"]["grafana"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in grafana["volumes"]}
    assert mounts[provider["providers"][0]["options"]["path"]] == "./deploy/grafana/dashboards"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose.resolved(compose.REQUIRED)["services"]


def test_training_runs_are_counted_by_status_at_each_scrape(services: Services) -> None:
    def scraped() -> dict[str, float]:
        families = text_string_to_metric_families(generate_latest(services.metrics.registry).decode())
        return {s.labels["status"]: s.value for f in families if f.name == "training_runs" for s in f.samples}

    assert scraped() == dict.fromkeys((status.value for status in RunStatus), 0.0)
    now = datetime.now(UTC)
    with services.db.session() as session:
        admin = services.users.create(session, "oma", "a-long-enough-password", Role.ADMIN, now)
        session.flush()
        for number, status in enumerate((RunStatus.DONE, RunStatus.DONE, RunStatus.FAILED)):
            session.add(
                TrainingRun(
                    kind=TrainingKind.RECOGNITION,
                    status=status,
                    sequence=number + 1,
                    model_name=f"archive-v{number + 1}",
                    created_by=admin.id,
                    created_at=now,
                )
            )
    counts = scraped()
    assert counts["DONE"] == 2 and counts["FAILED"] == 1 and counts["RUNNING"] == 0


def test_prometheus_scrapes_both_services_management_ports() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert all(job["metrics_path"] == "/metrics" for job in config["scrape_configs"])
    backend = compose.service_environment("backend", compose.REQUIRED)
    ocr = compose.service_environment("ocr-service", compose.REQUIRED)
    assert targets == {f"backend:{backend['APP_MANAGEMENT_PORT']}", f"ocr-service:{ocr['OCR_MANAGEMENT_PORT']}"}
    # Reachable on the internal network: bound beyond the container's loopback, and exposed.
    assert ocr["OCR_MANAGEMENT_HOST"] == "0.0.0.0"
    assert ocr["OCR_MANAGEMENT_PORT"] in compose.resolved(compose.REQUIRED)["services"]["ocr-service"]["expose"]
    prometheus = compose.resolved(compose.REQUIRED)["services"]["prometheus"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]


def _caddyfile() -> str:
    return "\n".join(line.split("#", 1)[0] for line in (DEPLOY / "Caddyfile").read_text().splitlines())


def test_the_proxy_serves_the_configured_host_and_only_the_public_port() -> None:
    caddyfile = _caddyfile()
    backend = compose.service_environment("backend", compose.REQUIRED)
    assert re.search(r"^\{\$APP_HOST_NAME\} \{", caddyfile, re.MULTILINE)
    assert re.findall(r"reverse_proxy (\S+)", caddyfile) == [f"backend:{backend['APP_PORT']}"]
    assert backend["APP_MANAGEMENT_PORT"] not in caddyfile
    proxy = compose.resolved(compose.REQUIRED)["services"]["proxy"]
    assert proxy["environment"]["APP_HOST_NAME"] == compose.REQUIRED["APP_HOST_NAME"]
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]


@pytest.mark.parametrize("path", ["/metrics", "/health", "/metrics/x", "/health/ready"])
def test_the_proxy_refuses_internal_paths(path: str) -> None:
    caddyfile = _caddyfile()
    matcher = re.search(r"@internal path ([^\n]+)", caddyfile)
    assert matcher and re.search(r"respond @internal 40[34]", caddyfile)
    patterns = matcher[1].split()
    assert any(p == path or (p.endswith("/*") and path.startswith(p[:-1])) for p in patterns)
    # Refused before anything is proxied: Caddy orders respond before reverse_proxy, and the
    # matcher sits in the site block that proxies.
    assert caddyfile.index("respond @internal") < caddyfile.index("reverse_proxy")
