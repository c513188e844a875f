"""Refuse request bodies over a size, as problem+json 413, before reading them whole."""

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.problems import problem_response


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> HTTPException:
        # An HTTPException, so FastAPI passes it through body parsing untouched
        # and the problem handlers render it.
        return HTTPException(413, f"The request body is larger than {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = problem_response(status=413, reason="payload_too_large", title="Request body too large",
                                        detail=f"The request body is larger than {self.max_bytes} bytes",
                                        instance=scope.get("path"))
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body that did not declare its size
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)
