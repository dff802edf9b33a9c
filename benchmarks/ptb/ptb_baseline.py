"""Prunes a trained dense PTB language model with a reviewer baseline:
ISS (Wen et al., 2018) or DARB (Ren et al., 2019), at the size of a gated
model.

Both start from a trained dense `Embedding -> LSTM -> LSTM -> Dense` chain
(`--dense-model`, e.g. a `ptb_language_model.py --model dense` run) and get
the training budget of the gated-from-dense models: a prune phase of
`--epochs` (4) at the constant learning rate `--lr` (0.25, Zaremba scale),
then `--finetune-epochs` (3) at `--finetune-lr · --finetune-decay^epoch`
(0.25 · 0.5^epoch).

- `--method iss` (`ptb_iss.py`): group lasso on the ISS components during
  the prune phase, then the cut to exactly `--keep` sizes and fine-tuning
  of the slim model.
- `--method darb` (`ptb_darb.py`): block-max masks on the LSTM kernels and
  recurrent kernels, gradually to as many LSTM parameters as the gated
  model of `--keep` sizes has (or `--lstm-params`), held through
  fine-tuning; the model stays dense with exact zeros.

Every epoch prints one line and writes a checkpoint to `--out`; `--resume`
continues from it (`ptb_language_model.Run`). At the end `--out` holds
`model.keras` (a plain Keras 3 chain) and `results.json`: the keys of
`ptb_language_model.py`'s, plus `method`, `lstm_params`, `keep` and
`choices` (every choice the papers leave open, one sentence each). Nothing
here imports TensorFlow: it trains on TensorFlow and JAX.

Example:

```
python benchmarks/ptb/ptb_baseline.py --method iss --config small \\
    --dense-model runs/ptb-small-dense/model.keras --keep 200,120,100 \\
    --out runs/ptb-small-iss
```
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from keras_l0.datasets import ptb  # noqa: E402

import ptb_darb  # noqa: E402
import ptb_iss  # noqa: E402
import ptb_language_model  # noqa: E402
import ptb_lm  # noqa: E402
from ptb_lm import UsageError  # noqa: E402

PROG = os.path.basename(__file__)


def build_parser():
    parser = ptb_lm.ArgumentParser(
        prog=PROG,
        description="Prune a trained dense PTB language model with ISS or "
        "DARB at the size of a gated model.",
    )
    add = parser.add_argument
    add("--method", choices=("iss", "darb"), required=True)
    add("--dense-model", required=True, help="the trained dense model.keras")
    add(
        "--keep",
        type=ptb_language_model._sizes,
        help="the gated model's sizes EMBEDDING,UNITS1,UNITS2: iss cuts to "
        "them; darb keeps as many LSTM parameters as they have",
    )
    add(
        "--lstm-params",
        type=ptb_lm.positive_int,
        help="darb: LSTM parameters (biases included) to keep, instead of "
        "those of --keep",
    )
    add(
        "--threshold",
        choices=ptb_darb.THRESHOLDS,
        help="darb: unstructured magnitude threshold giving the row "
        "densities, over all LSTM matrices or per matrix (default: global)",
    )
    add(
        "--group-lasso",
        type=float,
        help=f"iss: λ per unit of group norm, in units of the mean token "
        f"loss (default {ptb_iss.DEFAULT_GROUP_LASSO:g})",
    )
    add("--config", choices=sorted(ptb_lm.CONFIGS), default="small")
    add(
        "--data-dir",
        help=f"folder with ptb.{{train,valid,test}}.txt.gz (default: "
        f"${ptb.ENV_VAR})",
    )
    add("--out", help="output folder (default: runs/ptb-<config>-<method>)")
    add("--resume", action="store_true", help="continue the run in --out")
    add(
        "--epochs",
        type=ptb_language_model._non_negative_int,
        default=4,
        help="prune-phase epochs (default 4)",
    )
    add(
        "--lr",
        type=float,
        default=0.25,
        help="constant prune-phase learning rate, Zaremba scale (0.25)",
    )
    add(
        "--finetune-epochs",
        type=ptb_language_model._non_negative_int,
        default=3,
        help="fine-tuning epochs (default 3)",
    )
    add("--finetune-lr", type=float, default=0.25)
    add(
        "--finetune-decay",
        type=float,
        default=0.5,
        help="factor on the fine-tuning learning rate per epoch (0.5)",
    )
    add(
        "--max-steps",
        type=ptb_lm.positive_int,
        help="use only the first N windows of every epoch and evaluation",
    )
    add(
        "--steps-per-execution",
        type=ptb_lm.positive_int,
        default=1,
        help="training steps per compiled call (speed on accelerators)",
    )
    add(
        "--eval-batch-size",
        type=ptb_lm.positive_int,
        default=1,
        help="streams for the final validation and test perplexity (1)",
    )
    add("--seed", type=int, default=0)
    return parser


def check_args(args):
    """Raises `UsageError` for arguments that do not fit together."""
    if args.method == "iss":
        if args.keep is None:
            raise UsageError("--method iss needs --keep")
        if args.lstm_params is not None or args.threshold is not None:
            raise UsageError("--lstm-params and --threshold need --method darb")
        if args.group_lasso is not None and not args.group_lasso >= 0:
            raise UsageError("--group-lasso must be >= 0")
    else:
        if (args.keep is None) == (args.lstm_params is None):
            raise UsageError("--method darb needs --keep or --lstm-params")
        if args.group_lasso is not None:
            raise UsageError("--group-lasso needs --method iss")
    if args.keep is not None and (len(args.keep) < 2 or min(args.keep) < 1):
        raise UsageError("--keep takes sizes >= 1: EMBEDDING,UNITS1,UNITS2")
    for name in ("lr", "finetune_lr"):
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0")
    if not 0 < args.finetune_decay <= 1:
        raise UsageError("--finetune-decay must lie in (0, 1]")
    if not os.path.isfile(args.dense_model):
        raise UsageError(f"no such file: --dense-model {args.dense_model}")


def make_method(args):
    """The `ptb_iss.ISS` or `ptb_darb.DARB` of the arguments."""
    if args.method == "iss":
        penalty = args.group_lasso
        if penalty is None:
            penalty = ptb_iss.DEFAULT_GROUP_LASSO
        return ptb_iss.ISS(args.keep, penalty)
    threshold = args.threshold or "global"
    return ptb_darb.DARB(args.keep, args.lstm_params, threshold)


def phases(args):
    """(name, epochs, learning rate per 0-based epoch) of both phases."""
    lr, finetune_lr, decay = args.lr, args.finetune_lr, args.finetune_decay
    return [
        ("prune", args.epochs, lambda epoch: lr),
        ("finetune", args.finetune_epochs, lambda e: finetune_lr * decay**e),
    ]


def previous_state(args, run):
    """The state of the run in `--out` to resume, or `None` for a new one.

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
    saved, given = state["args"], ptb_language_model.run_defining(args)
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


def start(args, method, run, state):
    """`(plain_model, state)`: the resumed run's last checkpoint, or the
    checked dense model and a new state (`save_first` writes them)."""
    if state is not None:
        path = os.path.join(run.out, state["checkpoint"])
        return keras.models.load_model(path, compile=False), state
    try:
        dense = keras.models.load_model(args.dense_model, compile=False)
    except Exception as e:  # A file Keras cannot read, whatever the error.
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"--dense-model {args.dense_model}: {message}")
    state = dict(args=ptb_language_model.run_defining(args), history=[])
    try:
        method.check(dense, state)
    except ValueError as e:
        raise UsageError(f"--dense-model {args.dense_model}: {e}")
    return dense, state


def save_first(run, plain, state):
    """Saves a new run's first checkpoint (a resumed run has one)."""
    if "checkpoint" not in state:
        os.makedirs(run.out, exist_ok=True)
        run.save_checkpoint(plain, state, 0, 0)


class EpochEnd(ptb_language_model.EpochEnd):
    """`ptb_language_model.EpochEnd` with the method's extra history
    entries (group lasso; density and nonzero weights).

    Args:
        method: the `ISS` or `DARB` object.
        *args: those of `ptb_language_model.EpochEnd`.
    """

    def __init__(self, method, *args):
        super().__init__(*args)
        self.method = method

    def on_epoch_end(self, epoch, logs=None):
        extras = self.method.epoch_logs(self.model)
        super().on_epoch_end(epoch, logs)
        self.state["history"][-1].update(extras)
        ptb_lm.write_json(self.run.state_path, self.state)
        values = ", ".join(f"{k} {v:.4g}" for k, v in extras.items())
        print(f"  {self.method.name}: {values}", flush=True)


def train(args, config, data, run, method, plain, state):
    """Runs the phases from `state` on; returns the final plain model."""
    plan = phases(args)

    def windows(ids):
        return ptb_lm.WindowDataset(
            ids, config.batch_size, config.num_steps, args.max_steps
        )

    for index, (phase, epochs, learning_rate) in enumerate(plan):
        if index < state["phase"]:
            continue
        done = state["epoch"] if index == state["phase"] else 0
        # One training model per epoch: DARB's masks change every epoch and
        # a constraint is traced into the compiled step.
        for epoch in range(done, epochs):
            carried = method.training_model(
                plain, config.batch_size, phase, epoch, epochs, state
            )
            ptb_lm.compile_model(
                carried,
                lr=learning_rate(epoch),
                clip=config.clip,
                num_steps=config.num_steps,
                steps_per_execution=args.steps_per_execution,
            )
            callbacks = [
                ptb_lm.ResetCarry(),
                keras.callbacks.LearningRateScheduler(
                    lambda e: learning_rate(e) * config.num_steps
                ),
                EpochEnd(
                    method, run, state, plain, index, phase, epochs,
                    learning_rate,
                ),
            ]  # fmt: skip
            carried.fit(
                windows(data.train),
                validation_data=windows(data.valid),
                epochs=epoch + 1,
                initial_epoch=epoch,
                shuffle=False,
                callbacks=callbacks,
                verbose=0,
            )
        if index + 1 < len(plan):
            plain = method.end_prune(plain, state)
            run.save_checkpoint(plain, state, index + 1, 0)
    return plain


def finish(args, config, data, run, method, plain, state):
    """Writes model.keras and results.json (`ptb_language_model.finish`
    plus the method's keys); returns the results."""
    named = argparse.Namespace(**vars(args), model=args.method)
    results = ptb_language_model.finish(named, config, data, run, plain, state)
    results.update(method.results(plain, state))
    results["choices"] = [budget_choice(args)] + results["choices"]
    ptb_lm.write_json(
        os.path.join(run.out, ptb_language_model.RESULTS_NAME), results
    )
    return results


def budget_choice(args):
    """The training-budget sentence of `choices`."""
    return (
        f"Training budget as the gated-from-dense models: from the trained "
        f"dense model, {args.epochs} prune epochs at constant lr {args.lr:g} "
        f"(Zaremba scale), then {args.finetune_epochs} fine-tune epochs at "
        f"{args.finetune_lr:g}·{args.finetune_decay:g}^epoch, plain SGD "
        "with Zaremba's gradient clipping (not the papers' own schedules)."
    )


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        check_args(args)
        config = ptb_lm.CONFIGS[args.config]
        method = make_method(args)
        run = ptb_language_model.Run(
            args.out or os.path.join("runs", f"ptb-{args.config}-{args.method}")
        )
        state = previous_state(args, run)
        keras.utils.set_random_seed(args.seed)
        plain, state = start(args, method, run, state)
        try:
            data = ptb.load(args.data_dir)
        except (FileNotFoundError, ptb.PTBChecksumError) as e:
            raise UsageError(str(e))
        save_first(run, plain, state)
        plain = train(args, config, data, run, method, plain, state)
        finish(args, config, data, run, method, plain, state)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
