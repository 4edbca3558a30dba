"""`python -m ramnet_fla.lm ...` (and `torchrun ... -m ramnet_fla.lm train ...`)."""

import sys

from ramnet_fla.cli.lm import main

if __name__ == '__main__':
    sys.exit(main())
