"""`python -m agent` is the same as the `plategate` console script."""
import sys

from agent.cli import main

sys.exit(main())
