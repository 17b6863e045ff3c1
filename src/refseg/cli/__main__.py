"""`python -m refseg.cli`."""

import sys

from refseg.cli import main

sys.exit(main())
