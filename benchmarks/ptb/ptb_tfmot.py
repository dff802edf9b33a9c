"""The TFMOT baseline: unstructured magnitude pruning of a trained dense PTB
model with `tensorflow_model_optimization`'s `prune_low_magnitude`, at the
LSTM weight count of a gated model.

The tool a user reaches for first. It only works on `tf_keras` models (not
Keras 3), so the script

1. loads the trained Keras 3 dense chain (`--dense-model`, `Embedding ->
   LSTM -> LSTM -> Dense`, Dropout layers kept) and builds its `tf_keras`
   twin with the same weights: `stateful=True` LSTMs over the config's
   fixed batch of 20 streams, their states reset at every epoch start and
   every evaluation (truncated backpropagation through time over
   consecutive windows, as `ptb_lm.WindowDataset` and `CarriedStateModel`
   train the other models);
2. wraps the two LSTM layers in `prune_low_magnitude` (TFMOT prunes their
   kernel and recurrent kernel, each to the same sparsity, not the biases).
   The embedding and the softmax layer are not pruned: the gated models do
   not remove their weights either (only the LSTM stack is budgeted), so
   both methods are compared at the same number of LSTM weights;
3. the target sparsity: `--keep EMB,H1,H2` (the kept sizes of a gated
   model) gives the target weight count, the kernel + recurrent-kernel
   weights of LSTMs of those sizes, `4*H1*(EMB+H1) + 4*H2*(H1+H2)`, and the
   sparsity `1 - target / (the dense model's)`; or `--sparsity S`;
4. trains with the budget of the gated-from-dense runs (7 epochs): SGD at
   Zaremba's scale (as `ptb_lm.compile_model`: lr x num_steps, global clip
   5 / num_steps, mean token cross-entropy), `--lr` 0.25 for the first
   `--ramp-epochs` 4 epochs and then `0.25 * 0.5 ** (epoch - 4)` (0-based:
   0.25, 0.125, 0.0625 for the last three, exactly the learning rates of
   the gated and magnitude runs). The sparsity ramps from 0 to the target
   over the ramp epochs (`PolynomialDecay`, masks updated every
   `frequency` steps) and is then held for the fine-tuning epochs;
5. `strip_pruning`, copies the weights into a Keras 3 chain of the dense
   sizes (`ptb_lm.build_model`), checks it against the stripped `tf_keras`
   model on a validation window (at most 1e-5 apart), saves `model.keras`,
   evaluates it like every other model (`ptb_lm.evaluate`, batch
   `--eval-batch-size`, default 1) and exports it to float32 TFLite
   (`keras_l0.export.to_tflite`, `--num-steps` tokens): the sparse weights
   are stored as dense arrays, so the file is no smaller than the dense
   model's; only its gzip is (`results.json` has both sizes).

Every epoch prints one line and writes a checkpoint (the pruned `tf_keras`
model's weights, masks and pruning steps included, as .npz) to `--out`; `--resume`
continues from it with the same arguments.

Example (PTB small, at the kept sizes of a gated model):

```
python benchmarks/ptb/ptb_tfmot.py --config small \\
    --dense-model runs/ptb-s9/small-dense/model.keras --keep 200,120,100 \\
    --out runs/ptb-s9/small-tfmot
```
"""

import argparse
import dataclasses
import gzip
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ptb_lm  # noqa: E402
from ptb_lm import UsageError  # noqa: E402

PROG = os.path.basename(__file__)
STATE_NAME = "state.json"
MODEL_NAME = "model.keras"
RESULTS_NAME = "results.json"
TFLITE_NAME = "model.tflite"
NOT_RUN_DEFINING = ("resume", "data_dir", "out")
MAX_COPY_DIFF = 1e-5

tf_keras = tfmot = ptb = None


def import_libraries():
    """TensorFlow, tf_keras and TFMOT, once the arguments are checked."""
    global tf_keras, tfmot, ptb
    if keras.backend.backend() != "tensorflow":
        raise UsageError(
            "needs KERAS_BACKEND=tensorflow (TFMOT trains and the TFLite "
            f"export runs on TensorFlow), not {keras.backend.backend()}"
        )
    import tf_keras

    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as e:
        raise UsageError(
            f"tensorflow-model-optimization is not installed ({e}); "
            "pip install -e '.[study]'"
        )
    from keras_l0.datasets import ptb


def _sizes(text):
    try:
        return [int(size) for size in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        )


def build_parser():
    parser = ptb_lm.ArgumentParser(
        prog=PROG, description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--config", choices=sorted(ptb_lm.CONFIGS), default="small"
    )
    parser.add_argument(
        "--dense-model", required=True, help="the trained dense model.keras"
    )
    parser.add_argument(
        "--keep",
        type=_sizes,
        help="EMB,H1,H2: the gated model's kept sizes; the target is the "
        "LSTM kernel + recurrent weight count of LSTMs of these sizes",
    )
    parser.add_argument(
        "--sparsity",
        type=float,
        help="the target sparsity of the LSTM kernels instead of --keep",
    )
    parser.add_argument("--out", help="folder (default runs/ptb-<config>-tfmot)")
    parser.add_argument(
        "--data-dir",
        help="folder with ptb.{train,valid,test}.txt.gz (default: "
        "$KERAS_L0_PTB_DIR)",
    )
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--max-steps",
        type=ptb_lm.positive_int,
        help="use only the first N windows of every epoch and evaluation",
    )
    parser.add_argument(
        "--eval-batch-size",
        type=ptb_lm.positive_int,
        default=1,
        help="streams of the final validation and test perplexity (default 1)",
    )
    parser.add_argument(
        "--epochs",
        type=ptb_lm.positive_int,
        default=7,
        help="training epochs in all (default 7, the gated-from-dense budget)",
    )
    parser.add_argument(
        "--ramp-epochs",
        type=ptb_lm.positive_int,
        default=4,
        help="epochs over which the sparsity ramps up, at the constant --lr "
        "(default 4); the others fine-tune at the held sparsity",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=0.25,
        help="Zaremba-scale learning rate (default 0.25); epoch e >= "
        "--ramp-epochs (0-based) runs at lr * --lr-decay ** (e - ramp)",
    )
    parser.add_argument("--lr-decay", type=float, default=0.5)
    parser.add_argument(
        "--frequency",
        type=ptb_lm.positive_int,
        default=100,
        help="steps between mask updates during the ramp (default 100; at "
        "most a twentieth of the ramp's steps)",
    )
    parser.add_argument(
        "--num-steps",
        type=ptb_lm.positive_int,
        help="unrolled steps per window (default: the config's, 35)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def check_args(args):
    if (args.keep is None) == (args.sparsity is None):
        raise UsageError("pass one of --keep and --sparsity")
    if args.sparsity is not None and not 0 <= args.sparsity < 1:
        raise UsageError("--sparsity must lie in [0, 1)")
    if args.keep is not None and (len(args.keep) != 3 or min(args.keep) < 1):
        raise UsageError("--keep takes three sizes >= 1: EMB,H1,H2")
    if args.ramp_epochs > args.epochs:
        raise UsageError("--ramp-epochs must be <= --epochs")
    if not args.lr > 0:
        raise UsageError("--lr must be > 0")
    if not 0 < args.lr_decay <= 1:
        raise UsageError("--lr-decay must lie in (0, 1]")
    if not os.path.isfile(args.dense_model):
        raise UsageError(f"no such file: --dense-model {args.dense_model}")


def learning_rate(args, epoch):
    """The Zaremba-scale learning rate of 0-based `epoch`."""
    return args.lr * args.lr_decay ** max(0, epoch - args.ramp_epochs)


def lstm_weight_count(sizes):
    """Kernel + recurrent-kernel weights of LSTMs fed `sizes[0]` inputs."""
    total = 0
    for inputs, units in zip(sizes[:-1], sizes[1:]):
        total += 4 * units * (inputs + units)
    return total


@dataclasses.dataclass
class Chain:
    """What the twin needs of a Keras 3 chain: per layer (kind, config)."""

    vocabulary: int
    sizes: list
    layers: list


def describe(model):
    """The chain of a plain Keras 3 dense model, or a UsageError."""
    try:
        layers = ptb_lm.chain_layers(model)
        ptb_lm.check_plain_chain([l for l in layers if l.weights])
    except ValueError as e:
        raise UsageError(f"--dense-model: {e}")
    spec = []
    for layer in layers:
        if isinstance(layer, keras.layers.Embedding):
            spec.append(("embedding", int(layer.input_dim), int(layer.output_dim)))
        elif isinstance(layer, keras.layers.Dropout):
            spec.append(("dropout", float(layer.rate)))
        elif isinstance(layer, keras.layers.LSTM):
            if layer.go_backwards or not layer.return_sequences:
                raise UsageError("--dense-model: LSTMs must run forwards with "
                                 "return_sequences=True")
            spec.append(("lstm", int(layer.units)))
        elif isinstance(layer, keras.layers.Dense):
            spec.append(("dense", int(layer.units)))
        else:
            raise UsageError(
                f"--dense-model: layer {layer.name!r} "
                f"({type(layer).__name__}) has no tf_keras twin here"
            )
    sizes = [s[2] for s in spec if s[0] == "embedding"]
    sizes += [s[1] for s in spec if s[0] == "lstm"]
    return Chain(spec[0][1], sizes, spec)


def weighted(layers):
    return [layer for layer in layers if layer.weights]


def tf_keras_twin(chain, batch_size, schedule=None):
    """The tf_keras chain, stateful over `batch_size` streams; its LSTMs
    wrapped in `prune_low_magnitude(schedule)` unless `schedule` is None.

    Returns:
        `(model, inner)`: the model and its unwrapped layers with weights,
        in chain order.
    """
    tokens = tf_keras.Input(batch_shape=(batch_size, None), dtype="int32")
    x = tokens
    inner = []
    for kind, *values in chain.layers:
        if kind == "embedding":
            layer = tf_keras.layers.Embedding(*values)
        elif kind == "dropout":
            layer = tf_keras.layers.Dropout(values[0])
        elif kind == "lstm":
            layer = tf_keras.layers.LSTM(
                values[0], return_sequences=True, stateful=True
            )
        else:
            layer = tf_keras.layers.Dense(values[0])
        if kind != "dropout":
            inner.append(layer)
        if kind == "lstm" and schedule is not None:
            layer = tfmot.sparsity.keras.prune_low_magnitude(
                layer, pruning_schedule=schedule
            )
        x = layer(x)
    return tf_keras.Model(tokens, x, name="ptb_lm_tf_keras"), inner


def reset_states(model):
    for layer in model.layers:
        layer = getattr(layer, "layer", layer)
        if getattr(layer, "stateful", False):
            layer.reset_states()


def make_callbacks(args, run, state, inner, lstms):
    class ResetAndRecord(tf_keras.callbacks.Callback):
        """Resets the streams' states; prints, records and checkpoints
        every epoch (after `UpdatePruningStep` re-masked the weights)."""

        def on_epoch_begin(self, epoch, logs=None):
            reset_states(self.model)
            self.start = time.perf_counter()

        def on_test_begin(self, logs=None):
            reset_states(self.model)

        def on_epoch_end(self, epoch, logs=None):
            entry = dict(
                phase="prune" if epoch < args.ramp_epochs else "finetune",
                epoch=epoch + 1,
                lr=learning_rate(args, epoch),
                train_perplexity=math.exp(logs["nll"]),
                val_perplexity=math.exp(logs["val_nll"]),
                sparsity=kernel_sparsity(lstms),
                seconds=time.perf_counter() - self.start,
            )
            print(
                f"{entry['phase']} epoch {epoch + 1}/{args.epochs}  "
                f"lr {entry['lr']:.4g}  train ppl "
                f"{entry['train_perplexity']:.2f}  val ppl "
                f"{entry['val_perplexity']:.2f}  LSTM kernel sparsity "
                f"{entry['sparsity']:.4f}  {entry['seconds']:.1f} s",
                flush=True,
            )
            state["history"].append(entry)
            run.save_checkpoint(self.model, state, epoch + 1)

    return [
        tfmot.sparsity.keras.UpdatePruningStep(),
        tf_keras.callbacks.LearningRateScheduler(
            lambda epoch: learning_rate(args, epoch) * run.num_steps
        ),
        ResetAndRecord(),
    ]


def kernel_sparsity(lstms):
    """Fraction of zeros among the kernels and recurrent kernels."""
    zeros = total = 0
    for layer in lstms:
        for weight in (layer.cell.kernel, layer.cell.recurrent_kernel):
            value = np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight)
            zeros += int(np.sum(value == 0))
            total += value.size
    return zeros / total


class Run:
    def __init__(self, out, num_steps):
        self.out = out
        self.num_steps = num_steps
        self.state_path = os.path.join(out, STATE_NAME)

    def load_state(self):
        with open(self.state_path, encoding="utf-8") as f:
            return json.load(f)

    def save_checkpoint(self, model, state, epoch):
        previous = state.get("checkpoint")
        # All weights of the pruned model (masks, thresholds and pruning
        # steps included) as arrays: tf_keras' .h5 weights refuse the
        # wrapper's two variables named "mask", and plain SGD has no state.
        name = f"checkpoint-{epoch:03d}.npz"
        weights = model.get_weights()

        def write(path):
            with open(path, "wb") as f:
                np.savez(f, *weights)

        ptb_lm.write_atomically(os.path.join(self.out, name), write)
        state.update(epoch=epoch, checkpoint=name)
        ptb_lm.write_json(self.state_path, state)
        if previous and previous != name:
            os.remove(os.path.join(self.out, previous))


def run_defining(args):
    values = {
        k: v for k, v in vars(args).items() if k not in NOT_RUN_DEFINING
    }
    return json.loads(json.dumps(values))


def previous_state(args, run):
    exists = os.path.exists(run.state_path)
    if not args.resume:
        if exists:
            raise UsageError(
                f"{run.out!r} already holds a run: pass --resume or another "
                "--out"
            )
        return None
    if not exists:
        raise UsageError(f"--resume: no run in {run.out!r}")
    state = run.load_state()
    given = run_defining(args)
    differing = sorted(
        name
        for name in set(state["args"]) | set(given)
        if state["args"].get(name) != given.get(name)
    )
    if differing:
        raise UsageError(
            "--resume: arguments differ from the run's: "
            + ", ".join(
                f"--{n.replace('_', '-')} (was {state['args'].get(n)!r})"
                for n in differing
            )
        )
    return state


def windows_arrays(ids, batch_size, num_steps, max_windows):
    """The windows in order as rows: batch `i` of `batch_size` rows is
    window `i` (fit with `shuffle=False`)."""
    windows = ptb_lm.WindowDataset(ids, batch_size, num_steps, max_windows)
    pairs = [windows[i] for i in range(len(windows))]
    x = np.concatenate([p[0] for p in pairs]).astype("int32")
    y = np.concatenate([p[1] for p in pairs]).astype("int32")
    return x, y


def schedule_for(args, sparsity, steps_per_epoch):
    """PolynomialDecay from 0 to `sparsity` over the ramp epochs.

    The wrapper counts training steps from 1; masks are updated at steps
    divisible by `frequency` up to `end_step`, the last ramp step that is,
    and then held.
    """
    ramp_steps = args.ramp_epochs * steps_per_epoch
    frequency = max(1, min(args.frequency, ramp_steps // 20))
    end_step = frequency * (ramp_steps // frequency)
    return (
        tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=float(sparsity),
            begin_step=0,
            end_step=end_step,
            frequency=frequency,
        ),
        dict(frequency=frequency, end_step=end_step, ramp_steps=ramp_steps),
    )


def train(args, config, data, run, dense, chain, sparsity, state):
    x, y = windows_arrays(
        data.train, config.batch_size, config.num_steps, args.max_steps
    )
    vx, vy = windows_arrays(
        data.valid, config.batch_size, config.num_steps, args.max_steps
    )
    steps_per_epoch = len(x) // config.batch_size
    schedule, details = schedule_for(args, sparsity, steps_per_epoch)
    state["schedule"] = details
    tf_keras.utils.set_random_seed(args.seed)
    pruned, inner = tf_keras_twin(chain, config.batch_size, schedule)
    lstms = [layer for layer in inner if isinstance(layer, tf_keras.layers.LSTM)]
    if state.get("checkpoint"):
        with np.load(os.path.join(run.out, state["checkpoint"])) as saved:
            pruned.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    else:
        for source, target in zip(weighted(ptb_lm.chain_layers(dense)), inner):
            target.set_weights(source.get_weights())
    pruned.compile(
        optimizer=tf_keras.optimizers.SGD(
            learning_rate=args.lr * config.num_steps,
            global_clipnorm=config.clip / config.num_steps,
        ),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            tf_keras.metrics.SparseCategoricalCrossentropy(
                from_logits=True, name="nll"
            )
        ],
    )
    done = state["epoch"]
    if done < args.epochs:
        pruned.fit(
            x,
            y,
            batch_size=config.batch_size,
            epochs=args.epochs,
            initial_epoch=done,
            shuffle=False,
            validation_data=(vx, vy),
            callbacks=make_callbacks(args, run, state, inner, lstms),
            verbose=0,
        )
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    return stripped, (vx[: config.batch_size], config.batch_size)


def keras3_copy(dense, chain, stripped):
    """A Keras 3 chain of the dense sizes holding the stripped weights."""
    dropout = [s[1] for s in chain.layers if s[0] == "dropout"]
    embedding, *units = chain.sizes
    model = ptb_lm.build_model(
        chain.vocabulary,
        embedding,
        units,
        dropout=dropout[0] if dropout else 0.0,
    )
    source = [l for l in stripped.layers if l.weights]
    target = weighted(ptb_lm.chain_layers(model))
    for s, t in zip(source, target, strict=True):
        t.set_weights(s.get_weights())
    return model


def lstm_counts(model):
    """(nonzero LSTM weights incl. biases, kernel sparsity, nonzero kernel
    and recurrent weights) of a Keras 3 chain."""
    nonzero = zeros = total = 0
    for layer in filter(ptb_lm.is_recurrent, ptb_lm.chain_layers(model)):
        cell = layer.cell
        for weight in (cell.kernel, cell.recurrent_kernel, cell.bias):
            value = keras.ops.convert_to_numpy(weight.value)
            nonzero += int(np.count_nonzero(value))
            if weight is not cell.bias:
                zeros += int(np.sum(value == 0))
                total += value.size
    return nonzero, zeros / total, total - zeros


CHOICES = [
    "TFMOT prune_low_magnitude (unstructured, per-tensor magnitude) because "
    "it is the pruning tool a Keras user reaches for first.",
    "Only the two LSTM layers are wrapped (TFMOT prunes their kernels and "
    "recurrent kernels, not biases); the embedding and softmax stay dense, as "
    "in the gated models, whose budget counts only the LSTM stack.",
    "The target is the kernel + recurrent weight count of LSTMs of the gated "
    "model's kept sizes (--keep), so both methods keep the same number of "
    "LSTM weights; each pruned tensor gets the same sparsity.",
    "The tf_keras twin carries the states of 20 streams across consecutive "
    "windows (stateful=True, reset at each epoch start and evaluation), the "
    "truncated BPTT that trains every other model of the study.",
    "Training budget and learning rates equal the gated-from-dense runs': 7 "
    "epochs, 0.25 for 4 then 0.25, 0.125, 0.0625 at Zaremba's scale (SGD "
    "lr x num_steps, global clip 5/num_steps, mean token cross-entropy).",
    "The sparsity ramps with PolynomialDecay (cubic, TFMOT's default shape) "
    "from 0 over the first 4 epochs, then is held for 3 fine-tuning epochs.",
    "After strip_pruning the weights are copied into a Keras 3 chain of the "
    "dense sizes and checked against the stripped tf_keras model on a window "
    "(at most 1e-5 times the largest logit, and 1e-5 below 1), so evaluation "
    "and export are those of every other model.",
    "Perplexities come from ptb_lm.evaluate on the Keras 3 copy, batch 1 by "
    "default, like the other models' results.json.",
    "The float32 TFLite file stores the zeros densely, so it is as large as "
    "the dense model's; tflite_gzip_bytes shows what the sparsity saves "
    "compressed, and no latency is saved.",
]


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        check_args(args)
        config = ptb_lm.CONFIGS[args.config]
        if args.num_steps:
            config = dataclasses.replace(config, num_steps=args.num_steps)
        run = Run(
            args.out or os.path.join("runs", f"ptb-{args.config}-tfmot"),
            config.num_steps,
        )
        state = previous_state(args, run)
        import_libraries()
        try:
            data = ptb.load(args.data_dir)
        except (FileNotFoundError, ptb.PTBChecksumError) as e:
            raise UsageError(str(e))
        try:
            dense = keras.models.load_model(args.dense_model, compile=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file
            raise UsageError(
                f"--dense-model {args.dense_model}: cannot load: "
                f"{type(e).__name__}"
            )
        chain = describe(dense)
        if chain.vocabulary != len(data.vocabulary):
            raise UsageError(
                f"--dense-model: {chain.vocabulary} words, PTB has "
                f"{len(data.vocabulary)}"
            )
        dense_weights = lstm_weight_count(chain.sizes)
        if args.keep is not None:
            for kept, size in zip(args.keep, chain.sizes):
                if kept > size:
                    raise UsageError(
                        f"--keep {args.keep} exceeds the dense sizes "
                        f"{chain.sizes}"
                    )
            sparsity = 1 - lstm_weight_count(args.keep) / dense_weights
        else:
            sparsity = args.sparsity
        if state is None:
            os.makedirs(run.out, exist_ok=True)
            state = dict(args=run_defining(args), history=[], epoch=0)
            ptb_lm.write_json(run.state_path, state)
        stripped, (window, batch) = train(
            args, config, data, run, dense, chain, sparsity, state
        )
        finish(args, config, data, run, dense, chain, stripped, window,
               sparsity, dense_weights, state)  # fmt: skip
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


def finish(args, config, data, run, dense, chain, stripped, window, sparsity,
           dense_weights, state):  # fmt: skip
    from keras_l0 import export

    model = keras3_copy(dense, chain, stripped)
    reset_states(stripped)
    expected = stripped(window, training=False).numpy()
    got = keras.ops.convert_to_numpy(model(window, training=False))
    difference = float(np.max(np.abs(expected - got)))
    # Relative to the logits' scale: trained PTB logits reach ~20-30.
    tolerance = MAX_COPY_DIFF * max(1.0, float(np.max(np.abs(expected))))
    if not difference <= tolerance:
        raise RuntimeError(
            f"The Keras 3 copy differs from the stripped tf_keras model by "
            f"{difference:.3g} (> {tolerance:.3g})"
        )
    ptb_lm.write_atomically(os.path.join(run.out, MODEL_NAME), model.save)
    nonzero, reached, kept = lstm_counts(model)
    flatbuffer = export.to_tflite(
        model, os.path.join(run.out, TFLITE_NAME),
        sequence_length=config.num_steps,
    )  # fmt: skip
    dense_flatbuffer = export.to_tflite(dense, sequence_length=config.num_steps)
    results = dict(
        model="tfmot",
        method="tfmot",
        config=args.config,
        eval_batch_size=args.eval_batch_size,
        num_steps=config.num_steps,
        max_windows=args.max_steps,
        **ptb_lm.evaluate(
            model, data, args.eval_batch_size, config.num_steps, args.max_steps
        ),
    )
    results.update(
        keep=args.keep,
        target_sparsity=sparsity,
        sparsity=reached,
        lstm_params=nonzero,
        lstm_kernel_weights=dense_weights,
        lstm_kernel_weights_kept=kept,
        max_abs_diff_keras3_tf_keras=difference,
        schedule=state.get("schedule"),
        tflite_bytes=len(flatbuffer),
        tflite_gzip_bytes=len(gzip.compress(flatbuffer, 9)),
        dense_tflite_bytes=len(dense_flatbuffer),
        dense_tflite_gzip_bytes=len(gzip.compress(dense_flatbuffer, 9)),
        tflite_shrinks=len(flatbuffer) < len(dense_flatbuffer),
        history=state["history"],
        choices=CHOICES,
    )
    ptb_lm.write_json(os.path.join(run.out, RESULTS_NAME), results)
    partial = f" (first {args.max_steps} windows)" if args.max_steps else ""
    print(
        f"tfmot {args.config}: sparsity {reached:.4f} (target {sparsity:.4f}), "
        f"valid ppl {results['valid_perplexity']:.2f}, test ppl "
        f"{results['test_perplexity']:.2f}{partial}; tflite "
        f"{len(flatbuffer):,} bytes (dense {len(dense_flatbuffer):,}), gzip "
        f"{results['tflite_gzip_bytes']:,} (dense "
        f"{results['dense_tflite_gzip_bytes']:,})",
        flush=True,
    )
    return results


if __name__ == "__main__":
    sys.exit(main())
