"""``python -m cmrbench`` (and ``torchrun -m cmrbench`` / ``accelerate launch -m cmrbench``): the command line."""

import sys

from .cli import main

sys.exit(main())
