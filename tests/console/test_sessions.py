"""Sessions end by time, at sign-out, and when their key is revoked (unit
tests: a key store stand-in and a clock the test moves)."""

from console_service.sessions import SessionStore
from shared.identity import Principal

GOOD_KEY = "caj_0123456789abcdef_secret"
PRINCIPAL = Principal(key_id="0123456789abcdef", role="coordinator", agency_id=None, country=None)


class FakeKeyStore:
    def __init__(self) -> None:
        self.valid = {GOOD_KEY}

    def authenticate(self, presented: str) -> Principal | None:
        return PRINCIPAL if presented in self.valid else None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(lifetime: float = 60.0) -> tuple[SessionStore, FakeKeyStore, Clock]:
    keys, clock = FakeKeyStore(), Clock()
    return SessionStore(keys, lifetime_seconds=lifetime, clock=clock), keys, clock  # type: ignore[arg-type]


def test_a_valid_key_opens_a_session_with_random_ids():
    sessions, _keys, _clock = store()
    first, second = sessions.open(GOOD_KEY), sessions.open(GOOD_KEY)
    assert first is not None and second is not None
    assert first.session_id != second.session_id and first.csrf_token != second.csrf_token
    assert GOOD_KEY not in first.session_id
    assert sessions.get(first.session_id) is first
    assert first.principal == PRINCIPAL


def test_an_unknown_key_opens_nothing():
    sessions, _keys, _clock = store()
    assert sessions.open("caj_0123456789abcdef_wrong") is None
    assert len(sessions) == 0
    assert sessions.get(None) is None and sessions.get("made-up") is None


def test_a_session_expires_after_its_lifetime():
    sessions, _keys, clock = store(lifetime=60)
    session = sessions.open(GOOD_KEY)
    assert session is not None
    clock.now += 59
    assert sessions.get(session.session_id) is session
    clock.now += 1
    assert sessions.get(session.session_id) is None
    assert len(sessions) == 0


def test_closing_ends_the_session():
    sessions, _keys, _clock = store()
    session = sessions.open(GOOD_KEY)
    assert session is not None
    sessions.close(session.session_id)
    assert sessions.get(session.session_id) is None


def test_a_revoked_key_ends_its_sessions_at_the_next_sweep_or_use():
    sessions, keys, _clock = store()
    swept, used = sessions.open(GOOD_KEY), sessions.open(GOOD_KEY)
    assert swept is not None and used is not None
    keys.valid.clear()
    assert sessions.get(used.session_id) is None
    assert sessions.sweep() == 1
    assert len(sessions) == 0
