"""``python -m rtq_nb.cli``: the same as the ``rtq-nb`` command."""

import sys

from rtq_nb.cli import main

sys.exit(main())
