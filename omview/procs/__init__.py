"""openmosixprocs: the process box (one node's processes), the migrator and the guests window."""
