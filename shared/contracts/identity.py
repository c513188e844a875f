"""API keys and agencies, as the `caj` CLI publishes them on `identity.keys`.

The topic is compacted and read from the start by every service, so each
service holds the current set of keys in memory. Revoking a key publishes its
record again with `revoked_at` set; services drop it within seconds.
"""

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.contracts.catalog import CountryCode, _Contract

Role = Literal["partner", "coordinator", "operator"]

API_KEY_CHANGED = "org.caj-tracker.identity.api-key.v1"
AGENCY_REGISTERED = "org.caj-tracker.identity.agency-registered.v1"
IDENTITY_SOURCE = "/caj-tracker/identity"


class ApiKeyRecord(_Contract):
    """Current state of one API key (record key `key:<key_id>`)."""

    key_id: str = Field(pattern=r"^[a-f0-9]{16}$")
    role: Role
    agency_id: str | None = Field(default=None, description="Partners only: the agency the key acts for")
    country: CountryCode | None = Field(default=None, description="Partners only: the agency's country")
    secret_sha256: str = Field(pattern=r"^[a-f0-9]{64}$", description="The secret is never stored, only its hash")
    label: str | None = Field(default=None, max_length=200)
    created_at: datetime
    revoked_at: datetime | None = None


class AgencyRecord(_Contract):
    """An agency known to identity (record key `agency:<agency_id>`)."""

    agency_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    country: CountryCode
    name: str | None = Field(default=None, max_length=300)
    registered_at: datetime
