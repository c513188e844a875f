"""`caj`: operate caj-tracker from the command line."""

import asyncio
import json
import os
from pathlib import Path
from typing import cast, get_args

import httpx
import typer
from sqlalchemy.exc import SQLAlchemyError

from caj import deliveries as delivery_admin
from caj import keys as key_admin
from caj import outbox as outbox_admin
from caj import slo, stack
from caj import status as stack_health
from caj.services import CONSOLE, PROCESSES, SERVICES
from shared import migrations
from shared.contracts.identity import Role

app = typer.Typer(help="Operate caj-tracker.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
stack_app = typer.Typer(help="The whole local system: Kafka and the three services.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(stack_app, name="stack")
keys_app = typer.Typer(help="API keys: create (shown once), revoke, list.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
outbox_app = typer.Typer(help="Outbox rows the broker kept refusing, set aside by the relay.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
deliveries_app = typer.Typer(help="Webhook deliveries, through the notifications API.", no_args_is_help=True)
app.add_typer(deliveries_app, name="deliveries")
slo_app = typer.Typer(help="Service-level objectives (deploy/slo.yaml) and their Prometheus rules.",
                      no_args_is_help=True)
app.add_typer(slo_app, name="slo")

BootstrapOption = typer.Option(
    os.environ.get("CAJ_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    "--bootstrap-servers", help="Kafka bootstrap servers (env CAJ_KAFKA_BOOTSTRAP_SERVERS)",
)

ServiceOption = typer.Option("all", "--service", "-s", help="catalog, requests, notifications or all")


def _selected(service: str):
    if service == "all":
        return list(SERVICES.values())
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose from {', '.join(SERVICES)} or all")
    return [SERVICES[service]]


@db_app.command("upgrade")
def db_upgrade(service: str = ServiceOption, revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    for info in _selected(service):
        migrations.upgrade(info.package, info.settings().resolved_database_url(), revision)
        typer.echo(f"{info.name}: upgraded to {revision}")


@db_app.command("downgrade")
def db_downgrade(service: str = ServiceOption, revision: str = "base") -> None:
    """Revert migrations down to REVISION (default: base, an empty schema)."""
    for info in _selected(service):
        migrations.downgrade(info.package, info.settings().resolved_database_url(), revision)
        typer.echo(f"{info.name}: downgraded to {revision}")


@stack_app.command("up")
def stack_up(timeout: float = typer.Option(120.0, help="Seconds to wait for every /readyz")) -> None:
    """Start Kafka, migrate, start the three services and the console, wait until they are ready."""
    stack.start_kafka(typer.echo)
    stack.migrate_all(typer.echo)
    for info in PROCESSES.values():
        stack.start_service(info, typer.echo)
    if not stack.wait_ready(timeout, typer.echo):
        raise typer.Exit(1)
    prometheus_url = stack.start_prometheus(typer.echo)
    typer.echo("")
    typer.echo("caj-tracker is up:")
    for info in SERVICES.values():
        settings = info.settings()
        typer.echo(f"  {info.name:<14} http://{settings.host}:{settings.port}/docs   "
                   "(metrics /metrics, health /readyz)")
    console = CONSOLE.settings()
    typer.echo(f"  {'console':<14} http://{console.host}:{console.port}/   (sign in with an API key: caj keys create)")
    typer.echo(f"  {'kafka':<14} {SERVICES['catalog'].settings().kafka_bootstrap_servers}")
    typer.echo(f"  {'prometheus':<14} " + (f"{prometheus_url}   (alerts /alerts, rules from deploy/prometheus/rules)"
                                            if prometheus_url else "not installed: apt-get install prometheus"))
    typer.echo(f"  logs           {stack.LOG_DIR}")
    typer.echo("Stop everything with: make down")


@stack_app.command("down")
def stack_down() -> None:
    """Stop Prometheus, the console and the three services, then the Kafka broker."""
    stack.stop_prometheus(typer.echo)
    for info in reversed(list(PROCESSES.values())):
        stack.stop_service(info, typer.echo)
    stack.stop_kafka()
    typer.echo("caj-tracker is down.")


@stack_app.command("status")
def stack_status(as_json: bool = typer.Option(False, "--json", help="Print JSON, for scripts")) -> None:
    """Each process (the three services and the console): ready or not and
    why, consumer lag per group, outbox backlog and age, set-aside outbox
    rows, deliveries by state. Exits 1 unless every one is ready."""
    statuses = []
    for info in PROCESSES.values():
        settings = info.settings()
        statuses.append(stack_health.service_status(info, f"http://{settings.host}:{settings.port}"))
    if as_json:
        typer.echo(json.dumps({"ready": all(s.ready for s in statuses),
                               "services": [s.as_json() for s in statuses]}, indent=2))
    else:
        for line in stack_health.render_text(statuses):
            typer.echo(line)
    raise typer.Exit(0 if all(status.ready for status in statuses) else 1)


@keys_app.command("create")
def keys_create(
    role: str = typer.Option(..., help="partner, coordinator or operator"),
    country: str = typer.Option(None, help="Partners: the agency's country (ISO alpha-2, e.g. TJ)"),
    agency: str = typer.Option(None, help="Partners: the agency id (e.g. tj-mfa); new agencies are registered"),
    agency_name: str = typer.Option(None, help="Partners: the agency's name, when registering it"),
    label: str = typer.Option(None, help="A note to tell keys apart"),
    bootstrap_servers: str = BootstrapOption,
) -> None:
    """Create a key and print it. It is shown only this once."""
    if role not in get_args(Role):
        raise typer.BadParameter("role must be partner, coordinator or operator", param_hint="--role")
    try:
        record, full_key, registered = asyncio.run(key_admin.create_key(
            bootstrap_servers, role=cast(Role, role), agency_id=agency, country=country.upper() if country else None,
            agency_name=agency_name, label=label,
        ))
    except (key_admin.KeyAdminError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    if registered:
        typer.echo(f"registered agency {agency} ({record.country})", err=True)
    typer.echo(f"created {role} key {record.key_id}; store it now, it is not shown again:", err=True)
    typer.echo(full_key)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key id (the 16 hex digits after caj_)"),
                bootstrap_servers: str = BootstrapOption) -> None:
    """Revoke a key; every service refuses it within seconds."""
    try:
        record = asyncio.run(key_admin.revoke_key(bootstrap_servers, key_id))
    except key_admin.KeyAdminError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    assert record.revoked_at is not None  # revoke_key returns the revoked record
    typer.echo(f"revoked {record.key_id} at {record.revoked_at.isoformat()}")


@keys_app.command("list")
def keys_list(bootstrap_servers: str = BootstrapOption) -> None:
    """Every key (never its secret) and every registered agency."""
    keys, agencies = asyncio.run(key_admin.list_keys(bootstrap_servers))
    typer.echo(f"{'key id':<18}{'role':<13}{'agency':<22}{'country':<9}{'created':<22}revoked")
    for record in keys:
        typer.echo(
            f"{record.key_id:<18}{record.role:<13}{record.agency_id or '-':<22}{record.country or '-':<9}"
            f"{record.created_at.strftime('%Y-%m-%d %H:%M:%S'):<22}"
            f"{record.revoked_at.strftime('%Y-%m-%d %H:%M:%S') if record.revoked_at else '-'}"
        )
    typer.echo(f"\n{len(agencies)} registered agencies: " + ", ".join(f"{a.agency_id} ({a.country})" for a in agencies))


@outbox_app.command("failed")
def outbox_failed(
    service: str = ServiceOption,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array, each row in full"),
) -> None:
    """Rows set aside: never published unless put back with `caj outbox retry`."""
    rows, unreadable = [], False
    for info in _selected(service):
        try:
            rows.extend(outbox_admin.failed(info.name, info.settings().resolved_database_url()))
        except outbox_admin.NoDatabase as error:
            typer.echo(f"{info.name}: {error}", err=True)
        except SQLAlchemyError as error:
            typer.echo(f"{info.name}: cannot read the outbox ({type(error).__name__}); is it migrated "
                       "(caj db upgrade)?", err=True)
            unreadable = True
    if as_json:
        typer.echo(json.dumps([row.as_json() for row in rows], indent=2, ensure_ascii=False))
    elif not rows:
        typer.echo("no set-aside outbox rows")
    else:
        typer.echo(f"{'id':<8}{'service':<15}{'topic':<28}{'event type':<48}{'attempts':<10}{'created':<22}reason")
        for row in rows:
            reason = (row.reason or "-").replace("\n", " ")
            typer.echo(
                f"{row.id:<8}{row.service:<15}{row.topic:<28}{row.event_type:<48}{row.attempts:<10}"
                f"{row.created_at.strftime('%Y-%m-%d %H:%M:%S'):<22}{reason[:120]}"
            )
    if unreadable:
        raise typer.Exit(1)


@outbox_app.command("retry")
def outbox_retry(
    row_id: int = typer.Argument(..., help="The row id, as `caj outbox failed` shows it"),
    service: str = typer.Option(..., "--service", "-s", help="catalog, requests or notifications: ids are per service"),
) -> None:
    """Put a set-aside row back to pending: the relay tries it again, from zero attempts."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose from {', '.join(SERVICES)}",
                                 param_hint="--service")
    try:
        found = outbox_admin.retry(SERVICES[service].settings().resolved_database_url(), row_id)
    except (outbox_admin.NoDatabase, SQLAlchemyError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    if not found:
        typer.echo(f"error: {service} has no set-aside outbox row {row_id}", err=True)
        raise typer.Exit(2)
    typer.echo(f"{service}: outbox row {row_id} is pending again")


@deliveries_app.command("retry")
def deliveries_retry(
    dead: bool = typer.Option(..., "--dead", help="Retry every dead delivery (the only kind retried by hand)"),
    agency: str = typer.Option(None, "--agency", help="Only this agency's deliveries"),
    url: str = typer.Option(None, "--url", help="The notifications service (default: from NOTIFICATIONS_HOST/_PORT)"),
    api_key: str = typer.Option(..., "--api-key", envvar="CAJ_API_KEY",
                                help="A coordinator or operator key (env CAJ_API_KEY)"),
) -> None:
    """Send dead deliveries again, each on a fresh schedule."""
    if not dead:
        raise typer.BadParameter("only dead deliveries are retried: pass --dead", param_hint="--dead")
    if url is None:
        settings = SERVICES["notifications"].settings()
        url = f"http://{settings.host}:{settings.port}"
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as client:
            report = delivery_admin.retry_dead(client, agency_id=agency)
    except httpx.HTTPStatusError as error:
        typer.echo(f"error: {url} answered {error.response.status_code}: {error.response.text[:300]}", err=True)
        raise typer.Exit(2) from error
    except httpx.HTTPError as error:
        typer.echo(f"error: cannot reach {url}: {type(error).__name__}", err=True)
        raise typer.Exit(2) from error
    for delivery_id, reason in report.refused.items():
        typer.echo(f"{delivery_id}: not retried ({reason})", err=True)
    typer.echo(f"retried {len(report.retried)} dead deliveries" + (f" of {agency}" if agency else "")
               + (f"; {len(report.refused)} refused" if report.refused else ""))
    if report.refused:
        raise typer.Exit(1)


@slo_app.command("rules")
def slo_rules(
    write: bool = typer.Option(False, "--write", help=f"Write {slo.RULES_FILE.name} instead of printing"),
) -> None:
    """The recording and burn-rate alert rules for deploy/slo.yaml."""
    rules = slo.render()
    if write:
        slo.RULES_FILE.write_text(rules)
        typer.echo(f"wrote {slo.RULES_FILE}")
    else:
        typer.echo(rules, nl=False)


@app.command("dashboards")
def dashboards(
    write: bool = typer.Option(False, "--write", help="Write deploy/grafana/dashboards/ instead of listing"),
) -> None:
    """The Grafana dashboards (one per service, one for the system), from caj/dashboards.py."""
    from caj.dashboards import rendered

    for path, text in rendered().items():
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        typer.echo(f"{'wrote ' if write else ''}{path}")


LogDirOption = typer.Option(stack.LOG_DIR, "--log-dir", help="Where the services' *.log files are")


@app.command("trace")
def trace(
    request_or_trace_id: str = typer.Argument(..., help="The X-Request-ID a service answered with, or a trace id"),
    log_dir: Path = LogDirOption,
) -> None:
    """A request's path through the services, from their logs, in order, with
    the time since its first line (make up's logs by default)."""
    from caj import trace as tracing

    paths = sorted(log_dir.glob("*.log"))
    if not paths:
        typer.echo(f"error: no *.log files in {log_dir}", err=True)
        raise typer.Exit(2)
    lines = tracing.follow(tracing.read_log_lines(paths), request_or_trace_id)
    if not lines:
        typer.echo(f"no log line in {log_dir} has the request id or trace id {request_or_trace_id}", err=True)
        raise typer.Exit(1)
    trace_ids = sorted({line.trace_id for line in lines if line.trace_id})
    services = sorted({line.service for line in lines})
    typer.echo(f"trace {', '.join(trace_ids)}: {len(lines)} lines from {', '.join(services)}")
    for row in tracing.render(lines):
        typer.echo(row)


@app.command("asyncapi")
def asyncapi() -> None:
    """Print the AsyncAPI 3.0 document of every topic and event (YAML)."""
    import yaml

    from shared.contracts.asyncapi import build_asyncapi

    typer.echo(yaml.safe_dump(build_asyncapi(), sort_keys=False, allow_unicode=True, width=120), nl=False)
