"""`python -m tensorkiln ...` is the `kiln` command."""

import sys

from .cli.main import main

sys.exit(main())
