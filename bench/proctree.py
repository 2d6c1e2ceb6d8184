"""Resident memory of process trees and the machine's busy CPU time, read from /proc (the
benchmarks' memory and CPU figures)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def process_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, command name, RSS in KiB) for every process readable right now."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/statm") as f:
                rss_pages = int(f.read().split()[1])
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0].decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        # The command name is in parentheses and may contain spaces: split after the last ')'.
        # It is cut to 15 characters (both providers are "pulumi-resource"), so argv[0] names it.
        name = os.path.basename(argv0) or stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        table[int(entry.name)] = (ppid, name, rss_pages * PAGE_KB)
    return table


def _descendants(table: dict[int, tuple[int, str, int]], roots: list[int]) -> list[int]:
    """`roots` and every process below them that is in `table`, each once, roots first."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _, _) in table.items():
        children[ppid].append(pid)
    found: list[int] = []
    seen: set[int] = set()
    todo = list(reversed(roots))
    while todo:
        pid = todo.pop()
        if pid in table and pid not in seen:
            seen.add(pid)
            found.append(pid)
            todo += children[pid]
    return found


def tree_rss(root: int) -> dict[str, tuple[int, int]]:
    """(process count, KiB of RSS) per command name over `root` (named "driver") and its descendants."""
    table = process_table()
    by_name: dict[str, tuple[int, int]] = {}
    for pid in _descendants(table, [root]):
        name = "driver" if pid == root else table[pid][1]
        count, kib = by_name.get(name, (0, 0))
        by_name[name] = (count + 1, kib + table[pid][2])
    return by_name


def total_kib(pids: list[int]) -> int:
    """Summed RSS (KiB) of `pids` and all their descendants, each process counted once."""
    table = process_table()
    return sum(table[pid][2] for pid in _descendants(table, pids))


def total_pss_kib(pids: list[int]) -> int:
    """Summed proportional set size (KiB) of `pids` and their descendants: each page shared by k
    processes (libraries, a fork server's imports in its forked jobs) counted 1/k in each, so
    the sum is the memory they take together. Costlier to read than RSS (the kernel walks each
    process's page tables): sample it less often."""
    table = process_table()
    total = 0
    for pid in _descendants(table, pids):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next((int(ln.split()[1]) for ln in f if ln.startswith("Pss:")), 0)
        except OSError:
            continue  # exited while we looked
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all CPUs, every process, the
    kernel): /proc/stat's user, nice, system, irq, softirq and steal. Differences of two readings
    give what a step cost, control plane and engine processes included."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
