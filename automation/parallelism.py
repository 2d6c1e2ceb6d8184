"""How many stack deploys to run at once, chosen from the memory this machine has free.

One deploy is a `pulumi` engine, our language host, the Python program, the kubernetes and random
providers and the policy pack: 496-575 MiB at its peak (bench/provision.py). A fixed parallelism
either wastes a big machine or runs a small one out of memory (what sinks operators that run a
few hundred stacks); this one divides a memory budget by that peak, and never goes beyond what
the CPUs can keep busy: one deploy per CPU and one more, since part of a deploy waits on the
cluster (bench/scale.py on 2 CPUs: 2, 3, 4 and 5 at once all finish 20 customers in 4.1-4.9 s
each, the deploys being CPU-bound; more only cost memory and CPU time lost to contention).
"""

from __future__ import annotations

import os
from pathlib import Path

# The peak resident memory of one deploy, rounded up (bench/provision.py measures it).
DEPLOY_PEAK_MIB = 600
# What the rest of the machine keeps: the control plane, Postgres, the worker itself.
RESERVED_MIB = 1024
# Everything the project runs stays under 4 GiB (issue 11): the deploys get at most this much.
DEFAULT_BUDGET_MIB = 3072
EXTRA_DEPLOYS = 1  # beyond one per CPU
BUDGET_VARIABLE = "IOTISTIC_DEPLOY_MEMORY_MIB"


def available_mib(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemAvailable in MiB (what the kernel can give without swapping)."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no MemAvailable in {meminfo}")


def memory_budget_mib(available: int | None = None) -> int:
    """The memory deploys may use: IOTISTIC_DEPLOY_MEMORY_MIB, else the default budget capped by
    what is free beyond the reserve."""
    if os.environ.get(BUDGET_VARIABLE):
        try:
            return int(os.environ[BUDGET_VARIABLE])
        except ValueError:
            raise SystemExit(f"error: {BUDGET_VARIABLE} must be a whole number of MiB") from None
    free = available_mib() if available is None else available
    return max(0, min(DEFAULT_BUDGET_MIB, free - RESERVED_MIB))


def auto_parallelism(pending: int, budget_mib: int | None = None, cpus: int | None = None) -> int:
    """Concurrent deploys for `pending` jobs: as many as the memory budget holds, at most one per
    CPU plus one, never more than there is work, and always at least one."""
    budget = memory_budget_mib() if budget_mib is None else budget_mib
    cpus = cpus or os.cpu_count() or 1
    by_memory = budget // DEPLOY_PEAK_MIB
    return max(1, min(by_memory, cpus + EXTRA_DEPLOYS, max(pending, 1)))
