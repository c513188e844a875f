"""What can go wrong with a call, said without HTTP.

Service code raises these; `shared.problems` answers each as problem+json
with the status of its kind, so the mapping to HTTP lives in one place.
`reason` is the stable machine-readable code; extensions (keyword
arguments) are added to the problem body as they are.
"""

from typing import Any


class DomainError(Exception):
    def __init__(self, reason: str, title: str, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail or title)
        self.reason = reason
        self.title = title
        self.detail = detail
        self.extensions = extensions


class Unauthenticated(DomainError):
    """The caller is not known: no credentials, or ones that are not valid."""


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class NotFound(DomainError):
    """No such thing, or not visible to the caller."""


class Conflict(DomainError):
    """Not possible in the current state of things."""


class Invalid(DomainError):
    """The call is well formed but what it asks for is refused."""


class RateLimited(DomainError):
    """Too many calls; `retry_after` seconds until the next may go ahead."""

    def __init__(self, reason: str, title: str, detail: str | None = None, *, retry_after: int,
                 **extensions: Any) -> None:
        super().__init__(reason, title, detail, **extensions)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """Not ready yet (still loading); `retry_after` seconds is a fair wait, when known."""

    def __init__(self, reason: str, title: str, detail: str | None = None, *, retry_after: int | None = None,
                 **extensions: Any) -> None:
        super().__init__(reason, title, detail, **extensions)
        self.retry_after = retry_after
