# The session's key maker, shared with the requests and notifications tests.
from tests.requests.conftest import keys  # noqa: F401
