"""Tests on the VM cluster (omview-cluster up --vm): migrations between separate kernels."""
