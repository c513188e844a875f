"""API key administration over the `identity.keys` topic."""

import asyncio
from datetime import UTC, datetime

from shared.contracts.identity import (
    AGENCY_REGISTERED,
    API_KEY_CHANGED,
    IDENTITY_SOURCE,
    AgencyRecord,
    ApiKeyRecord,
    Role,
)
from shared.events import new_event, to_kafka
from shared.identity import KeyStore, new_api_key
from shared.kafka import make_producer
from shared.topics import IDENTITY_KEYS, ensure_topics


class KeyAdminError(ValueError):
    pass


CATCH_UP_SECONDS = 30.0


async def current_identity(bootstrap_servers: str) -> KeyStore:
    """Read `identity.keys` to its end (within CATCH_UP_SECONDS) and return the resulting state."""
    await ensure_topics(bootstrap_servers, [IDENTITY_KEYS])
    store = KeyStore(bootstrap_servers)
    await store.start()
    try:
        deadline = asyncio.get_running_loop().time() + CATCH_UP_SECONDS
        while not store.caught_up:
            if asyncio.get_running_loop().time() > deadline:
                raise KeyAdminError("timed out reading identity.keys")
            await asyncio.sleep(0.05)
        return store
    finally:
        await store.stop()


async def _publish(bootstrap_servers: str, records: list[tuple[str, str, dict]]) -> None:
    producer = make_producer(bootstrap_servers, client_id="caj-cli")
    await producer.start()
    try:
        for record_key, event_type, data in records:
            event = new_event(type=event_type, source=IDENTITY_SOURCE, subject=record_key, data=data)
            record = to_kafka(event, key=record_key)
            await producer.send_and_wait(IDENTITY_KEYS.name, value=record.value, key=record.key, headers=record.headers)
    finally:
        await producer.stop()


async def create_key(
    bootstrap_servers: str,
    *,
    role: Role,
    agency_id: str | None = None,
    country: str | None = None,
    agency_name: str | None = None,
    label: str | None = None,
) -> tuple[ApiKeyRecord, str, bool]:
    """Create a key; returns (record, the key to show once, whether the agency was new)."""
    if role == "partner":
        if not agency_id or not country:
            raise KeyAdminError("a partner key needs --agency and --country")
    elif agency_id or country:
        raise KeyAdminError(f"a {role} key is not bound to an agency or country")
    state = await current_identity(bootstrap_servers)
    now = datetime.now(UTC)
    records: list[tuple[str, str, dict]] = []
    registered = False
    if role == "partner":
        assert agency_id is not None and country is not None  # checked above
        known = state.agencies.get(agency_id)
        if known is not None and known.country != country:
            raise KeyAdminError(f"agency {agency_id} is registered for {known.country}, not {country}")
        if known is None:
            agency = AgencyRecord(agency_id=agency_id, country=country, name=agency_name, registered_at=now)
            records.append((f"agency:{agency_id}", AGENCY_REGISTERED, agency.model_dump(mode="json")))
            registered = True
    key_id, full_key, secret_hash = new_api_key()
    record = ApiKeyRecord(key_id=key_id, role=role, agency_id=agency_id, country=country,
                          secret_sha256=secret_hash, label=label, created_at=now)
    records.append((f"key:{key_id}", API_KEY_CHANGED, record.model_dump(mode="json")))
    await _publish(bootstrap_servers, records)
    return record, full_key, registered


async def revoke_key(bootstrap_servers: str, key_id: str) -> ApiKeyRecord:
    state = await current_identity(bootstrap_servers)
    record = state.keys.get(key_id)
    if record is None:
        raise KeyAdminError(f"no key {key_id}")
    if record.revoked_at is not None:
        return record
    revoked = record.model_copy(update={"revoked_at": datetime.now(UTC)})
    await _publish(bootstrap_servers, [(f"key:{key_id}", API_KEY_CHANGED, revoked.model_dump(mode="json"))])
    return revoked


async def list_keys(bootstrap_servers: str) -> tuple[list[ApiKeyRecord], list[AgencyRecord]]:
    state = await current_identity(bootstrap_servers)
    keys = sorted(state.keys.values(), key=lambda record: record.created_at)
    agencies = sorted(state.agencies.values(), key=lambda agency: agency.agency_id)
    return keys, agencies
