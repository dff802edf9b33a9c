"""The Penn Treebank folder the PTB tests read, and their skip marker."""

import pytest

from keras_l0.datasets import ptb


def data_dir():
    """The PTB folder (`ptb.resolve_data_dir`), or None where there is none."""
    try:
        return ptb.resolve_data_dir()
    except FileNotFoundError:
        return None


DATA_DIR = data_dir()
requires_data = pytest.mark.skipif(
    DATA_DIR is None,
    reason=f"Penn Treebank folder not found: set {ptb.ENV_VAR} to a folder "
    "with ptb.{train,valid,test}.txt.gz",
)
