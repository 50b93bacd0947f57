"""L3 collector: openmosixcollector, the daemon that keeps the cluster's history (see docs/collector.md)."""

from __future__ import annotations
