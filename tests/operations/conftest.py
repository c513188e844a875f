# API keys made the way the `caj` CLI makes them, as the requests tests do.
from tests.requests.conftest import keys  # noqa: F401
