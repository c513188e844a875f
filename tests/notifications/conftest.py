# The catalog + requests stack and the key maker are shared with the requests tests.
from tests.requests.conftest import keys, stack  # noqa: F401
