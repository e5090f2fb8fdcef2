#!/usr/bin/env python3
"""Delivery benchmark of voicehooks: `python bench/delivery.py --help`, bench/README.md.

The benchmark itself is the package beside this file (bench/deliverybench/).
"""

import sys

from deliverybench.main import main

if __name__ == "__main__":
    sys.exit(main())
