"""Process-wide torch settings shared by training, scoring and the API."""
from __future__ import annotations

from typing import Optional

import torch

from core.config import get_settings


def set_torch_threads(threads: Optional[int] = None) -> None:
    """Pin torch to `threads` intra-op threads (default READMIT_TORCH_THREADS, 1).

    On a small machine several single-threaded workers beat one multi-threaded one, and torch's
    default (a thread per core in every process) oversubscribes the CPU.
    """
    threads = threads or get_settings().torch_threads
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # inter-op threads can be set once per process, before any parallel work
        pass
