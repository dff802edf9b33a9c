import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The Penn Treebank of this workplace, beside the checkout, unless set.
_PTB = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ptb")
if os.path.isdir(_PTB):
    os.environ.setdefault("KERAS_L0_PTB_DIR", os.path.normpath(_PTB))

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.backend.clear_session()
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
