"""The intra-op thread helpers: scoped overrides restore the caller's setting, bad counts are one-line errors."""

from __future__ import annotations

import pytest
import torch

from sepconv.errors import SepconvError
from sepconv.threads import set_torch_threads, torch_threads


def test_scoped_threads_restore_the_setting_even_after_an_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_threads_below_one_are_refused() -> None:
    before = torch.get_num_threads()
    with pytest.raises(SepconvError, match="at least 1") as info:
        set_torch_threads(0)
    assert "\n" not in str(info.value) and torch.get_num_threads() == before
    set_torch_threads(None)
    assert torch.get_num_threads() == before
