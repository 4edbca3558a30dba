"""`python -m ramnet_fla.cli ...`, the same as the `ramnet-fla` console script."""

import sys

from ramnet_fla.cli import main

sys.exit(main())
