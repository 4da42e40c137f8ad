"""``python -m gfnet_cli`` runs the ``gfnet`` command."""

import sys

from .main import main

sys.exit(main())
