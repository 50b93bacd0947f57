"""The VM tests' cluster: two VMs booted once for the whole package (tests/vm/helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from omview.testbed.vm import VmCluster, vm_leftovers, vm_teardown
from tests.conftest import require_root
from tests.vm.helpers import run


@pytest.fixture(scope="package")
def vms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmCluster]:
    require_root()
    state = tmp_path_factory.mktemp("vmcluster")
    try:
        cluster = VmCluster.up(state, 2, boot_timeout=300)
        for n in (1, 2):  # no automatic migration: these tests move jobs themselves
            assert run(cluster, n, ["mosctl", "stay"]).returncode == 0
        yield cluster
    finally:
        vm_teardown(state)
    assert vm_leftovers(state) == [], "the VM cluster left QEMU processes or links behind"
