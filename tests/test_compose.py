"""docker-compose.yml cannot run here (no Docker engine), so this reads it and
checks it agrees with the code: ports, environment names, Kafka, Prometheus
and Grafana wiring."""

from pathlib import Path

import pytest
import yaml

from caj.services import CONSOLE, PROCESSES, SERVICES
from shared.settings import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
PROMETHEUS = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())


def _env_prefix(settings_class) -> str:
    return settings_class.model_config["env_prefix"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_ports_and_environment_match_its_settings(name):
    info = SERVICES[name]
    compose_service = COMPOSE["services"][name]
    defaults = info.settings_class.model_fields
    port = defaults["port"].default
    assert compose_service["ports"] == [f"{port}:{port}"]
    environment = compose_service["environment"]
    prefix = _env_prefix(info.settings_class)
    for variable in environment:
        assert variable.startswith(prefix), f"{variable} lacks the {prefix} prefix"
        field = variable.removeprefix(prefix).lower()
        assert field in defaults, f"{variable} names no setting of {name}"
    assert environment[f"{prefix}PORT"] == str(port)
    assert environment[f"{prefix}KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert environment[f"{prefix}DATABASE_URL"].startswith("postgresql+psycopg://")
    assert environment[f"{prefix}DATABASE_URL"].endswith(f"@postgres:5432/{name}")
    command = " ".join(compose_service["command"])
    assert f"caj db upgrade --service {name}" in command, "migrations run before the service starts"
    assert f"{info.app_factory}" in command and f"--port {port}" in command


def test_each_service_database_is_created():
    init_sql = (REPO_ROOT / "deploy/postgres/init-databases.sql").read_text()
    for name in SERVICES:
        assert f"CREATE DATABASE {name} " in init_sql
    volume = COMPOSE["services"]["postgres"]["volumes"]
    assert any("init-databases.sql:/docker-entrypoint-initdb.d/" in entry for entry in volume)


def test_kafka_advertises_what_services_use_and_does_not_auto_create_topics():
    kafka = COMPOSE["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    environment = kafka["environment"]
    assert environment["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "PLAINTEXT://kafka:9092" in environment["KAFKA_ADVERTISED_LISTENERS"]
    assert environment["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_console_runs_without_a_database_and_calls_the_services_by_their_compose_names():
    console = COMPOSE["services"]["console"]
    defaults = CONSOLE.settings_class.model_fields
    port = defaults["port"].default
    assert console["ports"] == [f"{port}:{port}"]
    environment = console["environment"]
    for variable in environment:
        assert variable.startswith("CONSOLE_") and variable.removeprefix("CONSOLE_").lower() in defaults, variable
    assert environment["CONSOLE_PORT"] == str(port)
    assert environment["CONSOLE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "CONSOLE_DATABASE_URL" not in environment
    for name, info in SERVICES.items():
        service_port = info.settings_class.model_fields["port"].default
        assert environment[f"CONSOLE_{name.upper()}_URL"] == f"http://{name}:{service_port}"
        assert name in console["depends_on"]
    command = " ".join(console["command"])
    assert CONSOLE.app_factory in command and f"--port {port}" in command


def test_prometheus_scrapes_every_service_on_its_port():
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in PROMETHEUS["scrape_configs"]
    }
    for name, info in PROCESSES.items():
        port = info.settings_class.model_fields["port"].default
        assert targets[name] == [f"{name}:{port}"]
    prometheus = COMPOSE["services"]["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    # The config's rule files are found beside it, as in the repo.
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert PROMETHEUS["rule_files"] == ["rules/*.yml"]
    assert sorted(path.name for path in (REPO_ROOT / "deploy/prometheus/rules").glob("*.yml")) == [
        "alerts.yml", "slo.yml"]


def test_grafana_has_the_dashboards_and_prometheus_as_its_data_source():
    grafana = COMPOSE["services"]["grafana"]
    volumes = grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    dashboards = yaml.safe_load((REPO_ROOT / "deploy/grafana/provisioning/dashboards/caj-tracker.yml").read_text())
    path = dashboards["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in volumes
    assert len(list((REPO_ROOT / "deploy/grafana/dashboards").glob("*.json"))) == 4
    sources = yaml.safe_load((REPO_ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    source = sources["datasources"][0]
    port = COMPOSE["services"]["prometheus"]["ports"][0].split(":")[1]
    assert source["type"] == "prometheus" and source["url"] == f"http://prometheus:{port}"
    assert "prometheus" in grafana["depends_on"]


def test_one_image_for_all_services():
    assert (REPO_ROOT / "Dockerfile").exists()
    for name in SERVICES:
        assert COMPOSE["services"][name]["build"] == "."
    assert Path(REPO_ROOT / "Dockerfile").read_text().count("FROM ") == 1


def test_kafka_keeps_its_data_on_the_volume():
    kafka = COMPOSE["services"]["kafka"]
    log_dir = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert any(entry.endswith(":" + log_dir) for entry in kafka["volumes"])
