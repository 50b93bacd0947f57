"""``python -m omview.procs``: openmosixprocs (how openmosixview starts it)."""

import sys

from omview.procs.app import main

sys.exit(main())
