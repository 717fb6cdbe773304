import os

import pytest


def pytest_collection_modifyitems(config, items):
    """Slow soak/fuzz tests run only with SETMAIL_SLOW=1 or an explicit -m slow."""
    if os.environ.get("SETMAIL_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: set SETMAIL_SLOW=1 or use -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def minipki():
    from tests.minipki import build
    return build()
