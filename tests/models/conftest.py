import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """The model tests use tiny tensors: one thread (tests/conftest.py)."""
    yield
