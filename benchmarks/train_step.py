"""Training-step time of GatedLSTM against keras.layers.LSTM, side by side.

Builds the same stack twice (embedding-sized inputs, N LSTM layers, a
small head), one with `keras.layers.LSTM` and one with `keras_l0.GatedLSTM`
(input and hidden gates, penalty on), and times `train_on_batch`
interleaved: each round runs one step of each model, in alternating
order, so load on the machine hits both alike. Prints the median step times and their ratio.

    KERAS_BACKEND=tensorflow python benchmarks/train_step.py
    KERAS_BACKEND=jax python benchmarks/train_step.py --units 650 --layers 2
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_l0  # noqa: E402


def build(layer_cls, units, layers, steps, batch, vocab):
    keras.utils.set_random_seed(0)
    if vocab:
        inputs = keras.Input((steps,), batch_size=batch, dtype="int32")
        x = keras.layers.Embedding(vocab, units)(inputs)
    else:
        inputs = keras.Input((steps, units), batch_size=batch)
        x = inputs
    for _ in range(layers):
        x = layer_cls(units, return_sequences=True)(x)
    outputs = keras.layers.Dense(vocab or 1)(x)
    model = keras.Model(inputs, outputs)
    loss = (
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if vocab
        else "mse"
    )
    model.compile(keras.optimizers.SGD(1.0, clipnorm=5.0), loss)
    return model


def data(units, steps, batch, vocab):
    rng = np.random.RandomState(0)
    if vocab:
        x = rng.randint(0, vocab, size=(batch, steps)).astype("int32")
        y = rng.randint(0, vocab, size=(batch, steps)).astype("int32")
    else:
        x = rng.randn(batch, steps, units).astype("float32")
        y = rng.randn(batch, steps, 1).astype("float32")
    return x, y


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=650)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument(
        "--vocab",
        type=int,
        default=0,
        help="0: float inputs and a 1-unit head (isolates the LSTM stack); "
        "N: an Embedding/softmax language model over N words",
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    shape = (args.units, args.steps, args.batch, args.vocab)
    models = {
        "keras.layers.LSTM": build(keras.layers.LSTM, args.units, args.layers,
                                   args.steps, args.batch, args.vocab),
        "keras_l0.GatedLSTM": build(keras_l0.GatedLSTM, args.units,
                                    args.layers, args.steps, args.batch,
                                    args.vocab),
    }
    x, y = data(*shape)
    times = {name: [] for name in models}
    order = list(models.items())
    for round_ in range(args.warmup + args.rounds):
        for name, model in order if round_ % 2 else order[::-1]:
            start = time.perf_counter()
            model.train_on_batch(x, y)
            elapsed = time.perf_counter() - start
            if round_ >= args.warmup:
                times[name].append(elapsed)

    print(
        f"backend={keras.backend.backend()} layers={args.layers} "
        f"units={args.units} steps={args.steps} batch={args.batch} "
        f"vocab={args.vocab or '-'} rounds={args.rounds} (interleaved)"
    )
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    for name, median in medians.items():
        print(f"  {name:20s} median step {median:8.2f} ms")
    ratio = medians["keras_l0.GatedLSTM"] / medians["keras.layers.LSTM"]
    print(f"  ratio gated/plain: {ratio:.3f}")


if __name__ == "__main__":
    main()
