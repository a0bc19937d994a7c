"""``python -m tools.gen_vectors``: see :mod:`tools.gen_vectors`."""

import sys

from tools.gen_vectors import main

sys.exit(main())
