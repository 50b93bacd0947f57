"""Tests of the local netns cluster tool omview-cluster."""
