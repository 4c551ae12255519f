"""`python -m hf_infcompute ...` (and `accelerate launch -m hf_infcompute ...`) runs the CLI."""

import sys

from hf_infcompute.cli.main import main

sys.exit(main())
