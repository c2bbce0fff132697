"""`python -m eurobert_hf` runs the `eurobert-hf` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
