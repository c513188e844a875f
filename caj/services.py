"""The three services and the console as the command line knows them."""

from dataclasses import dataclass

from catalog_service.config import CatalogSettings
from console_service.config import ConsoleSettings
from notifications_service.config import NotificationsSettings
from requests_service.config import RequestsSettings
from shared.settings import ServiceSettings


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    package: str
    settings_class: type[ServiceSettings]

    def settings(self) -> ServiceSettings:
        return self.settings_class()

    @property
    def app_factory(self) -> str:
        return f"{self.package}.main:app"


SERVICES: dict[str, ServiceInfo] = {
    "catalog": ServiceInfo("catalog", "catalog_service", CatalogSettings),
    "requests": ServiceInfo("requests", "requests_service", RequestsSettings),
    "notifications": ServiceInfo("notifications", "notifications_service", NotificationsSettings),
}

# The web console: a process of the stack, but no service of its own data
# (no database, no migrations), so it is not among SERVICES.
CONSOLE = ServiceInfo("console", "console_service", ConsoleSettings)

# Every process `caj stack` starts, in start order: the console last, as it calls the others.
PROCESSES: dict[str, ServiceInfo] = {**SERVICES, CONSOLE.name: CONSOLE}
