"""``python -m asmnet`` (also what ``torchrun -m asmnet`` runs)."""

import sys

from .cli import main

sys.exit(main())
