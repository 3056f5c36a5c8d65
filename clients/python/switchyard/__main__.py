"""``python -m switchyard``: the interactive prompt (see ``switchyard.repl``)."""

import sys

from .repl import main

sys.exit(main())
