"""``python -m mamba_router``."""

import sys

from mamba_router.cli import main

sys.exit(main())
