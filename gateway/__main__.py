"""``python -m gateway`` is the ``linkloop`` command."""

import sys

from .cli import main

sys.exit(main())
