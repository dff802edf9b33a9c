"""Trains a Zaremba et al. (2014) LSTM language model on Penn Treebank:
dense, L0-gated (Wen et al., 2019) or magnitude-pruned.

`--model dense` trains `keras.layers.LSTM`s. `--model gated` trains
`keras_l0.GatedLSTM`s (input gates on the embedding dimensions for the
first layer, hidden gates on both layers) with the L0 penalty λ fixed
(`--l0-penalty`), ramped up (`--l0-warmup`) or steered onto a budget
(`--budget`), then optionally fine-tunes with the gates frozen at their
inference values (`--finetune-epochs`). `--model magnitude` takes a trained
dense model, removes the embedding dimensions and hidden units of lowest
weight norm down to `--keep` sizes, and fine-tunes.

The hidden states are carried across consecutive batches of 20 parallel
streams and reset at every epoch start and evaluation. Every epoch prints
one line and writes a checkpoint to `--out`; `--resume` continues from it.
At the end `--out` holds `model.keras` (the plain or gated model) and
`results.json` with the validation and test perplexity. Shrinking a gated
model and exporting it is a separate step (`ptb_shrink.py`, then
`keras-l0-shrink`). This script and `ptb_lm.py` never import TensorFlow
themselves: they train on the TensorFlow and JAX backends, e.g. with
`KERAS_BACKEND=jax` on a GPU machine without TensorFlow. (Not on torch: the
carried states are assigned inside the forward pass, which torch's autograd
refuses.)

Examples:

```
python benchmarks/ptb/ptb_language_model.py --config small --model dense \\
    --out runs/ptb-small-dense
python benchmarks/ptb/ptb_language_model.py --config small --model gated \\
    --l0-penalty 1e-6 --finetune-epochs 2 --out runs/ptb-small-gated
python benchmarks/ptb/ptb_language_model.py --config small --model magnitude \\
    --dense-model runs/ptb-small-dense/model.keras --keep 200,120,100 \\
    --finetune-epochs 4 --out runs/ptb-small-magnitude
```
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from keras_l0.datasets import ptb  # noqa: E402

import ptb_lm  # noqa: E402
from ptb_lm import UsageError  # noqa: E402

PROG = os.path.basename(__file__)
STATE_NAME = "state.json"
MODEL_NAME = "model.keras"
RESULTS_NAME = "results.json"
# Arguments that may differ between a run and its --resume.
NOT_RUN_DEFINING = ("resume", "data_dir", "out", "steps_per_execution")


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _sizes(text):
    try:
        return [int(size) for size in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        )


def build_parser():
    parser = ptb_lm.ArgumentParser(
        prog=PROG,
        description="Train a Zaremba et al. (2014) PTB language model: "
        "dense, L0-gated or magnitude-pruned.",
    )
    parser.add_argument(
        "--model",
        choices=("dense", "gated", "magnitude", "retrain"),
        default="dense",
        help="retrain: fine-tune the plain model --from (e.g. the slim.keras "
        "of a shrunk gated model) for --finetune-epochs",
    )
    parser.add_argument(
        "--from",
        dest="from_model",
        help="retrain: the plain model.keras to start from",
    )
    parser.add_argument(
        "--config", choices=sorted(ptb_lm.CONFIGS), default="small"
    )
    parser.add_argument(
        "--data-dir",
        help=f"folder with ptb.{{train,valid,test}}.txt.gz (default: "
        f"${ptb.ENV_VAR})",
    )
    parser.add_argument(
        "--out",
        help="folder for checkpoints and results (default: "
        "runs/ptb-<config>-<model>)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint",
    )
    parser.add_argument(
        "--epochs",
        type=_non_negative_int,
        help="training epochs (default: the config's)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        help="constant learning rate (Zaremba scale) of the training epochs "
        "instead of the config's schedule, e.g. lower for gates trained on "
        "a --dense-model",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        help="dense or gated from scratch: EMBEDDING,UNITS1,UNITS2 instead "
        "of the config's width (e.g. a dense model of a pruned model's "
        "sizes trained from scratch: the direct-design baseline)",
    )
    parser.add_argument(
        "--decay-after",
        type=_non_negative_int,
        help="dense and gated: epochs at the first learning rate before the "
        "decay starts, instead of the config's (with --epochs and "
        "--lr-decay: a shorter schedule)",
    )
    parser.add_argument(
        "--lr-decay",
        type=float,
        help="dense and gated: factor on the learning rate per epoch after "
        "--decay-after, instead of the config's",
    )
    parser.add_argument(
        "--num-steps",
        type=ptb_lm.positive_int,
        help="unrolled steps per window (default: the config's, 35)",
    )
    parser.add_argument(
        "--max-steps",
        type=ptb_lm.positive_int,
        help="use only the first N windows of every epoch and evaluation "
        "(smoke runs and timing)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--l0-penalty",
        type=float,
        help="gated: λ per expected surviving weight, in units of the mean "
        "token loss; the fixed value, the --l0-warmup target or the "
        "--budget starting value",
    )
    parser.add_argument(
        "--l0-warmup",
        type=_non_negative_int,
        default=0,
        help="gated: ramp λ up to --l0-penalty over this many epochs "
        "(keras_l0.callbacks.L0Warmup)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        help="gated: adapt λ to land on this budget "
        "(keras_l0.callbacks.BudgetController)",
    )
    parser.add_argument(
        "--budget-metric",
        choices=("params", "neurons", "flops"),
        default="params",
        help="gated: what --budget counts (default: params)",
    )
    parser.add_argument(
        "--budget-epochs",
        type=ptb_lm.positive_int,
        help="gated: epochs over which the --budget schedule descends to "
        "the target (default: half of the training epochs)",
    )
    parser.add_argument(
        "--budget-start",
        type=_non_negative_int,
        default=0,
        help="gated: epoch at which the --budget schedule starts to descend",
    )
    parser.add_argument(
        "--budget-horizon",
        type=_non_negative_int,
        help="gated: updates of λ ahead that the --budget controller "
        "forecasts the kept size (default 10; 0 for none, e.g. for gates on "
        "a --dense-model, which the data loss pushes back open)",
    )
    parser.add_argument(
        "--budget-rise-gain",
        type=float,
        help="gated: how fast the --budget controller raises λ while the "
        "network is larger than scheduled (default 0.05; e.g. 0.25 for "
        "gates on a --dense-model)",
    )
    parser.add_argument(
        "--budget-control",
        choices=("shift", "lambda"),
        help="gated: how the --budget controller follows its schedule "
        "(BudgetController control=: 'shift' moves every log α by one common "
        "amount, the default; 'lambda' only adapts λ)",
    )
    parser.add_argument(
        "--budget-open-log-alpha",
        type=float,
        help="gated, shift control: log α to which the controller raises "
        "kept gates (BudgetController.open_log_alpha, default 3.75: the "
        "training gate is almost always 1); lower keeps the hard-concrete "
        "noise on kept neurons during the descent, a regulariser",
    )
    parser.add_argument(
        "--budget-width-pace",
        action="store_true",
        help="gated: scale the steps on weights that read closing units by "
        "dense / kept units (BudgetController.width_pace); off by default "
        "here, as in the results page's runs",
    )
    parser.add_argument(
        "--penalty-form", choices=("weights", "neurons"), default="weights"
    )
    parser.add_argument(
        "--no-input-gates",
        dest="input_gates",
        action="store_false",
        help="gated: gates on the hidden units only, none on the embedding "
        "dimensions",
    )
    parser.add_argument(
        "--initial-keep-probability",
        type=float,
        help="gated: P(gate != 0) at the start (default: 0.9 from scratch; "
        "with --dense-model the package default, whose inference gates are "
        "exactly 1, so the gated copy starts as the dense model)",
    )
    parser.add_argument(
        "--finetune-epochs",
        type=_non_negative_int,
        default=0,
        help="gated: epochs with the gates frozen after training; "
        "magnitude: epochs after pruning",
    )
    parser.add_argument(
        "--finetune-lr",
        type=float,
        help="learning rate (Zaremba scale) of the first fine-tuning "
        "epoch (default: the config's last-epoch learning rate)",
    )
    parser.add_argument(
        "--finetune-decay",
        type=float,
        default=1.0,
        help="factor on the fine-tuning learning rate after every epoch "
        "(default: 1, constant)",
    )
    parser.add_argument(
        "--finetune-hold",
        type=_non_negative_int,
        default=0,
        help="epochs by which the fine-tuning decay is delayed (default 0: "
        "only the first epoch runs at --finetune-lr)",
    )
    parser.add_argument(
        "--finetune-gate-noise",
        action="store_true",
        help="gated: keep sampling the open gates during the fine-tuning "
        "epochs (fixed, not trained; closed gates stay closed) instead of "
        "fixing every gate at its inference value",
    )
    parser.add_argument(
        "--dropout",
        type=float,
        help="dropout rate on the non-recurrent connections instead of the "
        "config's; magnitude and retrain: the new rate of the loaded "
        "model's Dropout layers (e.g. less for a pruned network)",
    )
    parser.add_argument(
        "--dense-model",
        help="magnitude: the trained dense model.keras to prune; gated: "
        "start from its weights (keras_l0.gate_model) instead of a random "
        "initialisation",
    )
    parser.add_argument(
        "--keep",
        type=_sizes,
        help="magnitude: kept sizes EMBEDDING,UNITS1,UNITS2",
    )
    parser.add_argument(
        "--eval-batch-size",
        type=ptb_lm.positive_int,
        help="streams for the final validation and test perplexity "
        "(default: the training batch size)",
    )
    parser.add_argument(
        "--steps-per-execution",
        type=ptb_lm.positive_int,
        default=1,
        help="training steps per compiled call (speed on accelerators)",
    )
    return parser


def check_args(args):
    """Raises `UsageError` for arguments that do not fit together."""
    if args.model == "gated":
        if args.l0_penalty is None or args.l0_penalty < 0:
            raise UsageError("--model gated needs --l0-penalty >= 0")
        if args.budget is not None and args.l0_warmup:
            raise UsageError("--budget and --l0-warmup both set λ: pass one")
    elif args.l0_penalty is not None or args.budget is not None:
        raise UsageError("--l0-penalty and --budget need --model gated")
    elif args.l0_warmup:
        raise UsageError("--l0-warmup needs --model gated")
    elif not args.input_gates:
        raise UsageError("--no-input-gates needs --model gated")
    if args.budget_open_log_alpha is not None and (
        args.budget is None or args.budget_control == "lambda"
    ):
        raise UsageError("--budget-open-log-alpha needs --budget, shift control")
    if args.budget_open_log_alpha is not None and not (
        0 < args.budget_open_log_alpha < math.inf
    ):
        raise UsageError("--budget-open-log-alpha must be > 0")
    if args.finetune_gate_noise and (
        args.model != "gated" or not args.finetune_epochs
    ):
        raise UsageError("--finetune-gate-noise needs --model gated, --finetune-epochs")
    if args.model == "magnitude":
        if args.dense_model is None or args.keep is None:
            raise UsageError("--model magnitude needs --dense-model and --keep")
    elif args.keep is not None:
        raise UsageError("--keep needs --model magnitude")
    elif args.dense_model is not None and args.model != "gated":
        raise UsageError("--dense-model needs --model magnitude or gated")
    if args.dense_model is not None and not os.path.isfile(args.dense_model):
        raise UsageError(f"no such file: --dense-model {args.dense_model}")
    if args.model == "retrain":
        if args.from_model is None or not args.finetune_epochs:
            raise UsageError("--model retrain needs --from and --finetune-epochs")
        if not os.path.isfile(args.from_model):
            raise UsageError(f"no such file: --from {args.from_model}")
    elif args.from_model is not None:
        raise UsageError("--from needs --model retrain")
    if args.model == "dense" and args.finetune_epochs:
        raise UsageError(
            "--finetune-epochs needs --model gated, magnitude or retrain"
        )
    if args.finetune_lr is not None and not args.finetune_lr > 0:
        raise UsageError("--finetune-lr must be > 0")
    if args.lr is not None:
        if args.model in ("magnitude", "retrain"):
            raise UsageError(
                "--lr is for the training epochs of dense and gated; "
                "magnitude and retrain take --finetune-lr"
            )
        if not args.lr > 0:
            raise UsageError("--lr must be > 0")
    if args.sizes is not None:
        if args.model not in ("dense", "gated") or args.dense_model:
            raise UsageError(
                "--sizes needs --model dense or gated (from scratch)"
            )
        if len(args.sizes) != 3 or min(args.sizes) < 1:
            raise UsageError("--sizes takes three sizes >= 1: EMB,UNITS1,UNITS2")
    if args.decay_after is not None or args.lr_decay is not None:
        if args.model in ("magnitude", "retrain") or args.lr is not None:
            raise UsageError(
                "--decay-after and --lr-decay change the training schedule "
                "of dense and gated runs without --lr"
            )
        if args.lr_decay is not None and not 0 < args.lr_decay <= 1:
            raise UsageError("--lr-decay must lie in (0, 1]")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        raise UsageError("--dropout must lie in [0, 1)")
    if not 0 < args.finetune_decay <= 1:
        raise UsageError("--finetune-decay must lie in (0, 1]")
    if args.budget_rise_gain is not None and not args.budget_rise_gain > 0:
        raise UsageError("--budget-rise-gain must be > 0")
    if args.budget is None and (
        args.budget_epochs is not None
        or args.budget_start
        or args.budget_horizon is not None
        or args.budget_rise_gain is not None
        or args.budget_control is not None
    ):
        raise UsageError(
            "--budget-epochs, --budget-start, --budget-horizon, "
            "--budget-rise-gain and --budget-control need --budget"
        )


def run_config(args):
    """The configuration with the run's --num-steps and schedule changes."""
    config = ptb_lm.CONFIGS[args.config]
    changes = dict(
        num_steps=args.num_steps,
        decay_after=args.decay_after,
        lr_decay=args.lr_decay,
    )
    changes = {name: value for name, value in changes.items() if value is not None}
    return dataclasses.replace(config, **changes)


def phases(args, config):
    """The run's phases: (name, epochs, learning rate per 0-based epoch)."""
    finetune_lr = args.finetune_lr
    if finetune_lr is None:
        finetune_lr = config.learning_rate(config.epochs - 1)
    plan = []
    if args.model not in ("magnitude", "retrain"):
        epochs = config.epochs if args.epochs is None else args.epochs
        learning_rate = config.learning_rate
        if args.lr is not None:
            learning_rate = lambda epoch: args.lr  # noqa: E731
        plan.append(("train", epochs, learning_rate))
    if args.model != "dense" and args.finetune_epochs:
        decay, hold = args.finetune_decay, args.finetune_hold
        plan.append(
            (
                "finetune",
                args.finetune_epochs,
                lambda epoch: finetune_lr * decay ** max(0, epoch - hold),
            )
        )
    return plan


class Run:
    """The output folder: checkpoints, state and results."""

    def __init__(self, out):
        self.out = out
        self.state_path = os.path.join(out, STATE_NAME)

    def load_state(self):
        with open(self.state_path, encoding="utf-8") as f:
            return json.load(f)

    def save_checkpoint(self, model, state, phase, epoch):
        """Saves `model` and a new `state` pointing at it, then removes the
        previous checkpoint."""
        previous = state.get("checkpoint")
        name = f"checkpoint-{phase}-{epoch:03d}.keras"
        ptb_lm.write_atomically(os.path.join(self.out, name), model.save)
        state.update(phase=phase, epoch=epoch, checkpoint=name)
        ptb_lm.write_json(self.state_path, state)
        if previous and previous != name:
            os.remove(os.path.join(self.out, previous))


class EpochEnd(keras.callbacks.Callback):
    """Prints one line per epoch and writes the checkpoint."""

    def __init__(
        self, run, state, plain, phase_index, phase, epochs, learning_rate
    ):
        super().__init__()
        self.run = run
        self.state = state
        self.plain = plain
        self.phase_index = phase_index
        self.phase = phase
        self.epochs = epochs
        self.learning_rate = learning_rate

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.first_step = None
        self.steps_after_first = 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self.first_step is None:
            self.first_step, self.first_step_end = batch, now
        self.steps_after_first = batch - self.first_step
        self.train_end = now

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        model = self.model
        lr = self.learning_rate(epoch)
        step_ms = None
        if self.steps_after_first:
            step_ms = (
                1000.0
                * (self.train_end - self.first_step_end)
                / self.steps_after_first
            )
        entry = dict(
            phase=self.phase,
            epoch=epoch + 1,
            lr=lr,
            train_perplexity=math.exp(logs["nll"]),
            val_perplexity=math.exp(logs["val_nll"]),
            neurons=ptb_lm.gate_counts(model.stack),
            l0_penalty=ptb_lm.l0_penalties(model.stack),
            seconds=seconds,
            train_seconds=self.train_end - self.start,
            ms_per_step=step_ms,
        )
        line = (
            f"{self.phase} epoch {epoch + 1}/{self.epochs}  lr {lr:.4g}  "
            f"train ppl {entry['train_perplexity']:.2f}  "
            f"val ppl {entry['val_perplexity']:.2f}  "
            f"{ptb_lm.format_counts(entry['neurons'])}"
        )
        if entry["l0_penalty"]:
            lambdas = ", ".join(f"{value:.3g}" for value in entry["l0_penalty"])
            line += f"  λ {lambdas}"
        line += f"  {seconds:.1f} s (train {entry['train_seconds']:.1f} s"
        if step_ms is not None:
            line += f", {step_ms:.1f} ms/step"
        print(line + ")", flush=True)
        self.state["history"].append(entry)
        model.to_model(self.plain)
        self.run.save_checkpoint(
            self.plain, self.state, self.phase_index, epoch + 1
        )


def l0_callbacks(args, plain):
    if args.budget is None and not args.l0_warmup:
        return []
    from keras_l0 import callbacks

    result = []
    if args.l0_warmup:
        result.append(callbacks.L0Warmup(args.l0_penalty, args.l0_warmup))
    if args.budget is not None:
        control = {}
        if args.budget_horizon is not None:
            control["horizon"] = args.budget_horizon
        if args.budget_rise_gain is not None:
            control["rise_gain"] = args.budget_rise_gain
        if args.budget_control is not None:
            control["control"] = args.budget_control
        if args.budget_open_log_alpha is not None:
            control["open_log_alpha"] = args.budget_open_log_alpha
        controller = callbacks.BudgetController(
            args.budget,
            metric=args.budget_metric,
            warmup_epochs=args.budget_epochs,
            start_epoch=args.budget_start,
            model=plain,
            width_pace=args.budget_width_pace,
            **control,
        )
        result.append(controller)
    return result


def initial_model(args, config, data):
    if args.model in ("retrain", "magnitude") or args.dense_model:
        model = loaded_model(args)
        if args.dropout is not None and not ptb_lm.set_dropout(
            model, args.dropout
        ):
            raise UsageError(
                "--dropout: the loaded model has no Dropout layer to change"
            )
        return model
    embedding, *units = args.sizes or [config.units] * (config.layers + 1)
    return ptb_lm.build_model(
        len(data.vocabulary),
        embedding,
        units,
        dropout=config.dropout if args.dropout is None else args.dropout,
        init_scale=config.init_scale,
        gated=args.model == "gated",
        gate_kwargs=gate_kwargs(args),
        seed=args.seed,
        input_gates=args.input_gates,
    )


def gate_kwargs(args):
    if args.model != "gated":
        return None
    kwargs = dict(l0_penalty=args.l0_penalty, penalty_form=args.penalty_form)
    keep = args.initial_keep_probability
    if keep is None and args.dense_model is None:
        keep = 0.9
    if keep is not None:
        kwargs["initial_keep_probability"] = keep
    return kwargs


def loaded_model(args):
    """The starting model of a retrain, magnitude or gated-from-dense run."""
    if args.model == "retrain":
        model = keras.models.load_model(args.from_model, compile=False)
        try:
            layers = ptb_lm.chain_layers(model)
        except ValueError as e:
            raise UsageError(f"--from {args.from_model}: {e}")
        if any(map(ptb_lm.is_gated, layers)):
            raise UsageError(
                f"--from {args.from_model}: a gated model; shrink it first "
                "(ptb_shrink.py writes slim.keras)"
            )
        return model
    dense = keras.models.load_model(args.dense_model, compile=False)
    if args.model == "gated":
        try:
            return ptb_lm.gate_dense_model(
                dense, input_gates=args.input_gates, **gate_kwargs(args)
            )
        except ValueError as e:
            raise UsageError(f"--dense-model {args.dense_model}: {e}")
    try:
        slim, _ = ptb_lm.magnitude_prune(dense, args.keep)
    except ValueError as e:
        raise UsageError(f"--keep / --dense-model: {e}")
    return slim


def run_defining(args):
    values = {
        name: value
        for name, value in vars(args).items()
        if name not in NOT_RUN_DEFINING
    }
    return json.loads(json.dumps(values))


def previous_state(args, run):
    """The state of the run in `--out` to resume, or `None` for a new run.

    Raises:
        UsageError: `--resume` without a run, a run without `--resume`, or
            arguments that differ from the resumed run's.
    """
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
    # A run saved before an argument existed had that argument's default.
    saved = {**run_defining(build_parser().parse_args([])), **state["args"]}
    given = run_defining(args)
    differing = sorted(
        name
        for name in set(saved) | set(given)
        if saved.get(name) != given.get(name)
    )
    if differing:
        raise UsageError(
            "--resume: arguments differ from the run's: "
            + ", ".join(
                f"--{name.replace('_', '-')} (was {saved.get(name)!r})"
                for name in differing
            )
        )
    return state


def start(args, config, data, run, state):
    """Returns `(plain_model, state)`: the resumed run's last checkpoint,
    or a new model saved as the first checkpoint."""
    if state is not None:
        path = os.path.join(run.out, state["checkpoint"])
        return keras.models.load_model(path, compile=False), state
    plain = initial_model(args, config, data)
    os.makedirs(run.out, exist_ok=True)
    state = dict(args=run_defining(args), history=[])
    run.save_checkpoint(plain, state, 0, 0)
    return plain, state


def train(args, config, data, run, plain, state):
    plan = phases(args, config)
    for phase_index, (phase, epochs, learning_rate) in enumerate(plan):
        if phase_index < state["phase"]:
            continue
        done = state["epoch"] if phase_index == state["phase"] else 0
        if done >= epochs:
            continue
        carried = ptb_lm.CarriedStateModel(plain, config.batch_size)
        if phase == "finetune":
            ptb_lm.freeze_gates(carried.stack, noise=args.finetune_gate_noise)
        ptb_lm.compile_model(
            carried,
            lr=config.lr,
            clip=config.clip,
            num_steps=config.num_steps,
            steps_per_execution=args.steps_per_execution,
        )
        callbacks = [
            ptb_lm.ResetCarry(),
            keras.callbacks.LearningRateScheduler(
                lambda epoch: learning_rate(epoch) * config.num_steps
            ),
        ]
        if phase == "train" and args.model == "gated":
            callbacks += l0_callbacks(args, plain)
        callbacks.append(
            EpochEnd(
                run, state, plain, phase_index, phase, epochs, learning_rate
            )
        )
        carried.fit(
            ptb_lm.WindowDataset(
                data.train, config.batch_size, config.num_steps, args.max_steps
            ),
            validation_data=ptb_lm.WindowDataset(
                data.valid, config.batch_size, config.num_steps, args.max_steps
            ),
            epochs=epochs,
            initial_epoch=done,
            shuffle=False,
            callbacks=callbacks,
            verbose=0,
        )
        if phase_index + 1 < len(plan):
            run.save_checkpoint(plain, state, phase_index + 1, 0)


def finish(args, config, data, run, plain, state):
    ptb_lm.write_atomically(os.path.join(run.out, MODEL_NAME), plain.save)
    batch_size = args.eval_batch_size or config.batch_size
    results = dict(
        model=args.model,
        config=args.config,
        eval_batch_size=batch_size,
        num_steps=config.num_steps,
        max_windows=args.max_steps,
        **ptb_lm.evaluate(
            plain, data, batch_size, config.num_steps, args.max_steps
        ),
    )
    results["history"] = state["history"]
    ptb_lm.write_json(os.path.join(run.out, RESULTS_NAME), results)
    partial = f" (first {args.max_steps} windows)" if args.max_steps else ""
    print(
        f"{args.model} {args.config}: valid ppl "
        f"{results['valid_perplexity']:.2f}, test ppl "
        f"{results['test_perplexity']:.2f}{partial}; "
        f"{ptb_lm.format_counts(results['neurons'])}; saved "
        f"{os.path.join(run.out, MODEL_NAME)}",
        flush=True,
    )
    return results


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        check_args(args)
        config = run_config(args)
        run = Run(
            args.out or os.path.join("runs", f"ptb-{args.config}-{args.model}")
        )
        state = previous_state(args, run)
        try:
            data = ptb.load(args.data_dir)
        except (FileNotFoundError, ptb.PTBChecksumError) as e:
            raise UsageError(str(e))
        keras.utils.set_random_seed(args.seed)
        plain, state = start(args, config, data, run, state)
        train(args, config, data, run, plain, state)
        finish(args, config, data, run, plain, state)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
