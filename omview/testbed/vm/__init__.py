"""Test tooling (root only): a cluster of small QEMU virtual machines (`omview-cluster up --vm`).

Each VM has its own kernel (Debian 12's), its own root file system (a copy-on-write overlay of one
cached base image, omview.testbed.vm.image), its own sshd, agent and CRIU, on a private bridge.
The project's checkout, its venv and the CRIU prefix reach the guests as read-only 9p shares at
the same paths, so code changes need no image rebuild. See docs/cluster.md, "VM cluster".
"""

from __future__ import annotations

from omview.testbed.vm.cluster import VmCluster, is_vm_state, vm_leftovers, vm_teardown

__all__ = ["VmCluster", "is_vm_state", "vm_leftovers", "vm_teardown"]
