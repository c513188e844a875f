"""`caj`: operate caj-tracker from the command line."""

import typer

from caj import stack
from caj.services import SERVICES
from shared import migrations

app = typer.Typer(help="Operate caj-tracker.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
stack_app = typer.Typer(help="The whole local system: Kafka and the three services.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(stack_app, name="stack")

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
    """Start Kafka, migrate, start the three services, wait until they are ready."""
    stack.start_kafka(typer.echo)
    stack.migrate_all(typer.echo)
    for info in SERVICES.values():
        stack.start_service(info, typer.echo)
    if not stack.wait_ready(timeout, typer.echo):
        raise typer.Exit(1)
    typer.echo("")
    typer.echo("caj-tracker is up:")
    for info in SERVICES.values():
        settings = info.settings()
        typer.echo(f"  {info.name:<14} http://{settings.host}:{settings.port}/docs   (metrics /metrics, health /readyz)")
    typer.echo(f"  {'kafka':<14} {SERVICES['catalog'].settings().kafka_bootstrap_servers}")
    typer.echo(f"  logs           {stack.LOG_DIR}")
    typer.echo("Stop everything with: make down")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the three services, then the Kafka broker."""
    for info in reversed(list(SERVICES.values())):
        stack.stop_service(info, typer.echo)
    stack.stop_kafka()
    typer.echo("caj-tracker is down.")


@stack_app.command("status")
def stack_status() -> None:
    """Which services run, and are they ready."""
    ready = stack.wait_ready(0.1, lambda _line: None)
    for info in SERVICES.values():
        pid = stack.running_pid(info)
        typer.echo(f"{info.name:<14} {'running (pid ' + str(pid) + ')' if pid else 'stopped'}")
    raise typer.Exit(0 if ready else 1)
