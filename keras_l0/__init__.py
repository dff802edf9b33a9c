"""keras-l0: remove whole neurons from Keras recurrent networks."""

from keras_l0 import callbacks
from keras_l0 import hard_concrete
from keras_l0.gate_copy import fixed_gate_model
from keras_l0.gate_copy import gate_model
from keras_l0.layers import GatedGRU
from keras_l0.layers import GatedGRUCell
from keras_l0.layers import GatedLSTM
from keras_l0.layers import GatedLSTMCell
from keras_l0.layers import GatedSimpleRNN
from keras_l0.layers import GatedSimpleRNNCell
from keras_l0.shrink import ShrinkError
from keras_l0.shrink import shrink
from keras_l0.summary import summary

__version__ = "0.1.0"
