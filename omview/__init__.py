"""omview: a modern openMosixview, process-migration cluster administration on today's Linux."""

__version__ = "0.1.0"
