import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "reference"


@pytest.fixture
def shared_reference() -> Path:
    """The real reference samples beside the repo; tests using them skip in a user's clone."""
    if not SHARED.is_dir():
        pytest.skip("../shared/reference is absent (only present in the team's workspace)")
    return SHARED
