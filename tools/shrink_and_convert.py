#!/usr/bin/env python
"""Shrink a gated .keras model and convert it to TFLite.

The same tool as the `keras-l0-shrink` console script, runnable from a
checkout: `python tools/shrink_and_convert.py model.keras -o out/`.
See `python tools/shrink_and_convert.py --help`.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_l0.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
