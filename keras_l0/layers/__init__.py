import keras

from keras_l0.layers.gated_gru import GatedGRU
from keras_l0.layers.gated_gru import GatedGRUCell
from keras_l0.layers.gated_lstm import GatedLSTM
from keras_l0.layers.gated_lstm import GatedLSTMCell
from keras_l0.layers.gated_simple_rnn import GatedSimpleRNN
from keras_l0.layers.gated_simple_rnn import GatedSimpleRNNCell

GATED_TO_PLAIN = {
    GatedLSTM: keras.layers.LSTM,
    GatedGRU: keras.layers.GRU,
    GatedSimpleRNN: keras.layers.SimpleRNN,
}
