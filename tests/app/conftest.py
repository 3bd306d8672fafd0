import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture
def fake_loader():
    from tests.app.fake_engine import FakeLoader

    return FakeLoader()
