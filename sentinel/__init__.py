"""Sentinel: a process guardian for containers that enforces a memory limit.

Kept import-free on purpose: the console script imports this package before
it spawns the workload, and every millisecond here delays the child.
"""

__version__ = "0.1.0"
