"""python -m reactor: the same as the `reactor` command."""

import sys

from reactor.cli import main

sys.exit(main())
