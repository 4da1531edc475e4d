"""The open-files limit: raised once at start by the exporter and by the simulated fleet."""

from __future__ import annotations

import contextlib
import resource


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-files limit towards the hard one; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
