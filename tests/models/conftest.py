import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The model tests use tiny tensors: one thread is fastest, and two spin-wait badly on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
