"""Server-side sessions. The browser holds only a random session id; the API
key, the principal and the CSRF token stay here, in memory (a restart signs
everyone out, which is the safe direction).

A session ends when its lifetime is over, at sign-out, or when its key is
revoked: `sweep()` runs every second or so and each use checks the key again.
"""

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.identity import KeyStore, Principal

SESSION_COOKIE = "caj_session"


@dataclass
class ConsoleSession:
    session_id: str
    api_key: str
    principal: Principal
    csrf_token: str
    expires_at: float


class SessionStore:
    def __init__(self, key_store: KeyStore, *, lifetime_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.key_store = key_store
        self.lifetime_seconds = lifetime_seconds
        self.clock = clock
        self._sessions: dict[str, ConsoleSession] = {}

    def open(self, api_key: str) -> ConsoleSession | None:
        """A new session for a valid key, or None (unknown, malformed or revoked)."""
        principal = self.key_store.authenticate(api_key)
        if principal is None:
            return None
        session = ConsoleSession(
            session_id=secrets.token_urlsafe(32), api_key=api_key, principal=principal,
            csrf_token=secrets.token_urlsafe(32), expires_at=self.clock() + self.lifetime_seconds,
        )
        self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if not self._still_valid(session):
            self._sessions.pop(session_id, None)
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def sweep(self) -> int:
        """Ends expired sessions and those whose key was revoked; how many ended."""
        ended = [sid for sid, session in self._sessions.items() if not self._still_valid(session)]
        for session_id in ended:
            self._sessions.pop(session_id, None)
        return len(ended)

    def __len__(self) -> int:
        return len(self._sessions)

    def _still_valid(self, session: ConsoleSession) -> bool:
        return self.clock() < session.expires_at and self.key_store.authenticate(session.api_key) is not None
