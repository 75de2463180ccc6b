"""``python -m mtpg_aiaa score ...`` / ``list`` (see ``cli.py``)."""
import sys

from .cli import main

sys.exit(main())
