"""Opt-in CPU profiles of the consumer's threads (CONSUMER_PROFILE_DIR), read by bench/ingest.py --profile.

Each thread writes `<dir>/<pid>-<thread>.prof` (cProfile/pstats format) when it ends. Off (an empty
directory setting) these are no-ops.
"""

from __future__ import annotations

import cProfile
import functools
import os
from collections.abc import Callable
from pathlib import Path


def start_profile(directory: str) -> cProfile.Profile | None:
    """Profile the calling thread from now on, if `directory` is set."""
    if not directory:
        return None
    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def stop_profile(profiler: cProfile.Profile | None, directory: str, name: str) -> None:
    if profiler is None:
        return
    profiler.disable()
    Path(directory).mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(Path(directory) / f"{os.getpid()}-{name}.prof")


def profiled(target: Callable[..., None], directory: str, name: str) -> Callable[..., None]:
    """`target`, profiled while it runs (in whatever thread calls it) if `directory` is set."""
    if not directory:
        return target

    @functools.wraps(target)
    def run(*args, **kwargs) -> None:
        profiler = start_profile(directory)
        try:
            target(*args, **kwargs)
        finally:
            stop_profile(profiler, directory, name)

    return run
