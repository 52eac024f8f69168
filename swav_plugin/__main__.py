"""``python -m swav_plugin RECIPE [key=value ...]``: the same as ``swav-train``."""

import sys

from swav_plugin.host.runner import main

sys.exit(main())
