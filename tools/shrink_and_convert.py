#!/usr/bin/env python
"""Shrink a gated .keras model and convert it to TFLite.

The same tool as the `keras-l0-shrink` console script, runnable from a
checkout: `python tools/shrink_and_convert.py model.keras -o out/`.
See `python tools/shrink_and_convert.py --help`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_l0_shrink import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
