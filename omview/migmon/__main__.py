import sys

from omview.migmon.app import main

sys.exit(main())
