"""Helpers shared by several test packages (real agents on loopback, ...)."""
