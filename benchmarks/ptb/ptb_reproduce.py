"""Runs the whole PTB study: dense, gated and magnitude models per config.

For every configuration in `--configs` it trains the dense baseline, one
gated model per budget (`BudgetController` on the parameters of the LSTM
stack, then fine-tuning with frozen gates), shrinks each gated model
(`ptb_shrink.py`), trains the magnitude baseline at the gated model's
kept sizes from the dense model, and retrains the shrunk gated model with
the magnitude baseline's fine-tuning recipe (`-retrain-`), so that both
pruned models get the same extra epochs at the same learning rates. Up to `--jobs` runs go at once (they are small for a GPU: several
share one well); each run's output goes to `--out/<config>-<model>[-<budget>]`
with its log beside it as `<name>.log`. A run whose `results.json` exists
is skipped and an interrupted one resumed, so the same command continues a
stopped study. At the end `--out/study.json` gathers every run's results.

`--from-dense EPOCHS` starts the gated models from the trained dense model
instead (`ptb_language_model.py --model gated --dense-model`), with the
magnitude baseline given the same epochs and learning rates.

`--baselines iss,darb,lds,tfmot` (with `--from-dense`) adds the reviewer's
baselines at each gated run's kept sizes (`ptb_baseline_commands.py`); the
TFMOT job runs with `KERAS_BACKEND=tensorflow` whatever the study's backend
(its `tf_keras` twin and export need TensorFlow).

`--direct budget|kept` adds the direct-design baseline: a dense model of
the pruned size trained from scratch with the configuration's recipe, of
uniform width from the budget fraction (started at once) or of the gated
run's kept sizes (after it); `--direct-sizes` and `--magnitude-sizes` add
dense-from-scratch and magnitude runs at fixed sizes (e.g. the ISS sizes).
`--dense-schedule` shortens the dense (and direct) schedule.

`--time-limit SECONDS` gives the study a deadline: at it the running jobs
are stopped (each keeps its last per-epoch checkpoint), `--out/progress.json`
records what finished, and the line `incomplete: resume with: ...` gives the
command that continues it (the same command). `ptb_collect.py` packs a run
folder for the way back from a GPU machine, `gpu_run.sh` drives both there.

Nothing here imports TensorFlow: run it with `KERAS_BACKEND=jax` on a GPU
machine, then time and export the slim models on a CPU machine with
`ptb_report.py`.

Example (the study of docs/results/ptb.md):

```
KERAS_BACKEND=jax python benchmarks/ptb/ptb_reproduce.py \\
    --configs small,medium,large --jobs 5 --out runs/ptb
```
"""

import argparse
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time

from ptb_baseline_commands import COMMANDS
from ptb_baseline_commands import OWN_TRAINING_LOOP
from ptb_baseline_commands import Schedule
from ptb_baseline_commands import command as baseline_command
from ptb_baseline_commands import environment as baseline_environment

HERE = os.path.dirname(os.path.abspath(__file__))
PROG = os.path.basename(__file__)
SCRIPT = os.path.abspath(__file__)
PROGRESS_NAME = "progress.json"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one configuration is pruned.

    `l0_penalty` is λ's starting value (the budget controller moves it);
    the budget schedule descends from epoch `budget_start` over
    `budget_epochs` epochs. Both pruned models then get `finetune_epochs`
    epochs: the gated model from `gated_lr`, the magnitude model (which has
    far more to recover) from `magnitude_lr`, each decaying by
    `finetune_decay` per epoch.

    With `from_dense` the gated model starts from the trained dense model
    (`--dense-model`) and trains its gates for `gated_epochs` epochs at the
    constant rate `gated_lr` instead of the configuration's epochs from
    scratch, then fine-tunes from `gated_lr`; the magnitude model gets those
    epochs as well (`gated_epochs + finetune_epochs`, the first
    `gated_epochs` at `magnitude_lr` before the decay starts, with
    `magnitude_lr == gated_lr`, so both models see the same learning rate in
    every epoch), and there is no retrain run: both models already start
    from the dense model. Its budget controller forecasts nothing
    (`budget_horizon` 0) and raises λ faster (`budget_rise_gain` 0.25):
    gates on a trained network reopen as soon as λ drops.

    `dense_gate_noise`, with `from_dense`: (keep probability, open log α) of
    the gated runs, passed as `--initial-keep-probability` and
    `--budget-open-log-alpha`, so that their kept gates stay noisy during
    the descent. Zaremba's small configuration has no dropout and overfits;
    this noise is its regulariser in dropout's place (PTB small at 0.3:
    test 110.23 against 113.07 with the package's gate defaults, dense
    112.30). The configurations with dropout keep the package's defaults.
    """

    budgets: tuple
    l0_penalty: float
    budget_epochs: int
    budget_start: int
    finetune_epochs: int
    gated_lr: float
    magnitude_lr: float
    finetune_decay: float
    from_dense: bool = False
    gated_epochs: int = None
    budget_horizon: int = None
    budget_rise_gain: float = None
    dense_gate_noise: tuple = None


RECIPES = {
    "small": Recipe(
        (0.5, 0.3, 0.15), 1e-7, 3, 0, 4, 0.1, 1.0, 0.5, dense_gate_noise=(0.77, 1.2)
    ),
    "medium": Recipe((0.075,), 3e-8, 10, 1, 6, 0.1, 1.0, 0.5),
    "large": Recipe((0.04,), 1e-8, 18, 1, 6, 0.1, 1.0, 0.5),
    "tiny": Recipe((0.5,), 1e-5, 1, 0, 1, 0.1, 1.0, 0.5),
}


@dataclasses.dataclass
class Job:
    name: str
    argv: list
    after: tuple = ()
    make_argv: object = None
    env: dict = dataclasses.field(default_factory=dict)
    process: object = None
    log: object = None


def _budgets(text):
    try:
        config, values = text.split("=")
        return config, tuple(float(v) for v in values.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected CONFIG=B1[,B2...], got {text!r}"
        )


def _sizes(text):
    try:
        config, values = text.split("=")
        sizes = tuple(int(v) for v in values.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 3 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected CONFIG=EMB,UNITS1,UNITS2, got {text!r}"
        )
    return config, sizes


def _methods(text):
    methods = tuple(text.split(","))
    unknown = sorted(set(methods) - set(COMMANDS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown baseline {', '.join(unknown)} (known: {', '.join(COMMANDS)})"
        )
    return methods


def _schedule(text):
    try:
        config, values = text.split("=")
        epochs, decay_after, decay = values.split(",")
        schedule = (int(epochs), int(decay_after), float(decay))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected CONFIG=EPOCHS,DECAY_AFTER,DECAY, got {text!r}"
        )
    if schedule[0] < 1 or schedule[1] < 0 or not 0 < schedule[2] <= 1:
        raise argparse.ArgumentTypeError(
            f"EPOCHS >= 1, DECAY_AFTER >= 0, DECAY in (0, 1]: got {text!r}"
        )
    return config, schedule


def lstm_params(sizes):
    """Parameters of an LSTM stack: embedding width, then hidden sizes."""
    return sum(
        4 * (inputs * units + units * units + units)
        for inputs, units in zip(sizes[:-1], sizes[1:])
    )


def uniform_sizes(units, layers, budget):
    """The widest uniform sizes (embedding = every hidden size) whose LSTM
    stack has at most `budget` times the parameters of the dense one."""
    target = budget * lstm_params([units] * (layers + 1))
    width = max(
        [w for w in range(1, units + 1) if lstm_params([w] * (layers + 1)) <= target]
        or [1]
    )
    return [width] * (layers + 1)


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train and shrink the dense, gated and magnitude PTB "
        "models of several configurations.",
    )
    parser.add_argument("--configs", default="small,medium,large")
    parser.add_argument(
        "--budgets",
        type=_budgets,
        action="append",
        default=[],
        help="CONFIG=B1[,B2...]: parameter budgets (fractions of the LSTM "
        "stack) instead of the recipe's, e.g. small=0.5,0.3",
    )
    parser.add_argument(
        "--from-dense",
        type=int,
        metavar="EPOCHS",
        help="start every gated run from the trained dense model and train "
        "its gates for EPOCHS epochs (the budget schedule over EPOCHS - 1), "
        "then fine-tune as the magnitude baseline does; the magnitude "
        "baseline gets the same epochs and learning rates",
    )
    parser.add_argument(
        "--gated-lr",
        type=float,
        metavar="LR",
        help="with --from-dense: the learning rate of the gate epochs and "
        "the first fine-tuning rate of both pruned models (default: the "
        "recipe's magnitude rate, 1; lower keeps the dense model from "
        "overfitting again)",
    )
    parser.add_argument(
        "--l0-penalty",
        type=float,
        help="starting λ of every gated run instead of the recipe's",
    )
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        metavar="EPOCHS",
        help="fine-tuning epochs of every pruned model instead of the "
        "recipe's",
    )
    parser.add_argument(
        "--direct",
        choices=("budget", "kept"),
        help="add the direct-design baseline per budget: a dense model "
        "trained from scratch (the configuration's recipe) of uniform width "
        "from the budget fraction, started at once ('budget'), or of the "
        "gated run's kept sizes, after it ('kept')",
    )
    parser.add_argument(
        "--initial-keep-probability",
        type=float,
        metavar="P",
        help="keep probability the gated runs' gates start at (passed on; "
        "default with --from-dense: the configuration's, small 0.77)",
    )
    parser.add_argument(
        "--budget-open-log-alpha",
        type=float,
        metavar="LOG_ALPHA",
        help="floor of the kept gates' log α in the gated runs (passed on; "
        "default with --from-dense: the configuration's, small 1.2, with "
        "keep probability 0.77: noisy kept gates, the regulariser that makes "
        "PTB small from dense beat its dense model)",
    )
    parser.add_argument(
        "--package-gate-defaults",
        action="store_true",
        help="with --from-dense: the gated runs use the package's gate "
        "defaults instead of their configuration's kept-gate noise (small: "
        "keep probability 0.77, kept gates held at log α 1.2; small has no "
        "dropout)",
    )
    parser.add_argument(
        "--baselines",
        type=_methods,
        default=(),
        metavar="M1[,M2...]",
        help="with --from-dense: add these baselines per budget, each from "
        "the dense model at the gated run's kept sizes with the gated run's "
        f"epochs and learning rates, after it: {', '.join(COMMANDS)}",
    )
    parser.add_argument(
        "--direct-sizes",
        type=_sizes,
        action="append",
        default=[],
        metavar="CONFIG=EMB,H1,H2",
        help="add a dense model of these sizes trained from scratch, e.g. "
        "large=1500,373,315 (ISS); repeatable",
    )
    parser.add_argument(
        "--magnitude-sizes",
        type=_sizes,
        action="append",
        default=[],
        metavar="CONFIG=EMB,H1,H2",
        help="add a magnitude run at these sizes (from the dense model, "
        "started with the gated runs); repeatable",
    )
    parser.add_argument(
        "--dense-schedule",
        type=_schedule,
        action="append",
        default=[],
        metavar="CONFIG=EPOCHS,DECAY_AFTER,DECAY",
        help="a shorter schedule for the dense and direct-design runs of "
        "CONFIG: EPOCHS epochs, the learning rate constant for DECAY_AFTER "
        "then times DECAY per epoch, e.g. large=40,12,0.82",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="stop the running jobs SECONDS after the start (they keep "
        "their last per-epoch checkpoint), write progress.json and exit 0 "
        "with an 'incomplete: resume with' line; the same command resumes",
    )
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default=os.path.join("runs", "ptb"))
    parser.add_argument("--data-dir")
    parser.add_argument(
        "--extra",
        default="",
        help="arguments added to every training run, e.g. "
        "'--steps-per-execution 10' or '--epochs 1' (smoke)",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        help="every training run and shrink evaluation reads only the first "
        "N windows (smoke runs)",
    )
    parser.add_argument(
        "--eval-batch-size",
        type=int,
        default=1,
        help="streams for the final validation and test perplexity of every "
        "run (default: 1, the text read as one stream, as Zaremba scores it)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the commands only"
    )
    return parser


def run_dir(out, name):
    return os.path.join(out, name)


def finished(out, name, file="results.json"):
    return os.path.exists(os.path.join(run_dir(out, name), file))


def train_argv(args, config, model, name, extra_args):
    return script_argv(
        args, "ptb_language_model.py", config, name, ["--model", model, *extra_args]
    )


def script_argv(args, script, config, name, extra_args, study_extra=True):
    """The command of one run of `script` (a training script of this
    folder) writing `--out/name`, resumed if it has a state; `--extra`
    unless `study_extra` is false."""
    argv = [
        sys.executable,
        os.path.join(HERE, script),
        "--config",
        config,
        "--out",
        run_dir(args.out, name),
    ]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    argv += ["--eval-batch-size", str(args.eval_batch_size)]
    if args.max_steps:
        argv += ["--max-steps", str(args.max_steps)]
    argv += extra_args + (args.extra.split() if study_extra else [])
    if os.path.exists(os.path.join(run_dir(args.out, name), "state.json")):
        argv.append("--resume")
    return argv


def kept_sizes(out, gated_name):
    with open(
        os.path.join(run_dir(out, gated_name), "results.json"), encoding="utf-8"
    ) as f:
        neurons = json.load(f)["neurons"]
    sizes = [neurons[0]["inputs_active"]]
    sizes += [entry["units_active"] for entry in neurons]
    return ",".join(str(max(size, 1)) for size in sizes)


def finetune_args(epochs, learning_rate, recipe):
    return [
        "--finetune-epochs",
        str(epochs),
        "--finetune-lr",
        f"{learning_rate:g}",
        "--finetune-decay",
        f"{recipe.finetune_decay:g}",
    ]


def plan(args):
    budgets = dict(args.budgets)
    schedules = dict(args.dense_schedule)
    jobs = []
    for config in args.configs.split(","):
        schedule = []
        if config in schedules:
            epochs, decay_after, decay = schedules[config]
            schedule = ["--epochs", str(epochs), "--decay-after",
                        str(decay_after), "--lr-decay", f"{decay:g}"]  # fmt: skip
        recipe = RECIPES[config]
        if args.from_dense:
            learning_rate = args.gated_lr or recipe.magnitude_lr
            recipe = dataclasses.replace(
                recipe,
                from_dense=True,
                gated_epochs=args.from_dense,
                budget_epochs=max(1, args.from_dense - 1),
                budget_start=0,
                gated_lr=learning_rate,
                magnitude_lr=learning_rate,
                budget_horizon=0,
                budget_rise_gain=0.25,
            )
        if args.l0_penalty is not None:
            recipe = dataclasses.replace(recipe, l0_penalty=args.l0_penalty)
        if args.finetune_epochs is not None:
            recipe = dataclasses.replace(
                recipe, finetune_epochs=args.finetune_epochs
            )
        dense = f"{config}-dense"
        jobs.append(
            Job(dense, train_argv(args, config, "dense", dense, schedule))
        )
        dense_model = os.path.join(run_dir(args.out, dense), "model.keras")
        config_budgets = budgets.get(config, recipe.budgets)

        def direct_job(name, sizes, after=(), config=config, schedule=schedule):
            if callable(sizes):
                return Job(
                    name,
                    None,
                    after=after,
                    make_argv=lambda: train_argv(
                        args, config, "dense", name,
                        ["--sizes", sizes(), *schedule],
                    ),
                )  # fmt: skip
            text = ",".join(str(size) for size in sizes)
            return Job(
                name,
                train_argv(args, config, "dense", name, ["--sizes", text, *schedule]),
                after=after,
            )

        later = []
        units, layers = ptb_lm_config(config)
        for budget in config_budgets if args.direct == "budget" else ():
            jobs.append(
                direct_job(
                    f"{config}-direct-{budget:g}",
                    uniform_sizes(units, layers, budget),
                )
            )
        for sizes_config, sizes in args.direct_sizes:
            if sizes_config == config:
                name = f"{config}-direct-" + "-".join(map(str, sizes))
                jobs.append(direct_job(name, sizes))
        start, magnitude_epochs, hold = [], recipe.finetune_epochs, []
        if recipe.from_dense:
            start = ["--dense-model", dense_model]
            start += ["--epochs", str(recipe.gated_epochs)]
            start += ["--lr", f"{recipe.gated_lr:g}"]
            magnitude_epochs += recipe.gated_epochs
            hold = ["--finetune-hold", str(recipe.gated_epochs)]
        if recipe.budget_horizon is not None:
            start += ["--budget-horizon", str(recipe.budget_horizon)]
        if recipe.budget_rise_gain is not None:
            start += ["--budget-rise-gain", f"{recipe.budget_rise_gain:g}"]
        keep_probability = args.initial_keep_probability
        open_log_alpha = args.budget_open_log_alpha
        if (
            recipe.from_dense
            and recipe.dense_gate_noise
            and not args.package_gate_defaults
        ):
            default_keep, default_open = recipe.dense_gate_noise
            if keep_probability is None:
                keep_probability = default_keep
            if open_log_alpha is None:
                open_log_alpha = default_open
        gate_noise = []
        if keep_probability is not None:
            gate_noise += ["--initial-keep-probability",
                           f"{keep_probability:g}"]  # fmt: skip
        if open_log_alpha is not None:
            gate_noise += ["--budget-open-log-alpha",
                           f"{open_log_alpha:g}"]  # fmt: skip
        for sizes_config, sizes in args.magnitude_sizes:
            if sizes_config != config:
                continue
            name = f"{config}-magnitude-" + "-".join(map(str, sizes))
            later.append(
                Job(
                    name,
                    train_argv(
                        args, config, "magnitude", name,
                        ["--dense-model", dense_model, "--keep",
                         ",".join(map(str, sizes)),
                         *finetune_args(magnitude_epochs, recipe.magnitude_lr,
                                        recipe), *hold],
                    ),
                    after=(dense,),
                )
            )  # fmt: skip
        for budget in config_budgets:
            gated = f"{config}-gated-{budget:g}"
            jobs.append(
                Job(
                    gated,
                    train_argv(
                        args,
                        config,
                        "gated",
                        gated,
                        [
                            *start,
                            *gate_noise,
                            "--l0-penalty",
                            f"{recipe.l0_penalty:g}",
                            "--budget",
                            f"{budget:g}",
                            "--budget-epochs",
                            str(recipe.budget_epochs),
                            "--budget-start",
                            str(recipe.budget_start),
                            *finetune_args(
                                recipe.finetune_epochs, recipe.gated_lr, recipe
                            ),
                        ],
                    ),
                    after=(dense,) if recipe.from_dense else (),
                )
            )
            shrink_argv = [
                sys.executable,
                os.path.join(HERE, "ptb_shrink.py"),
                os.path.join(run_dir(args.out, gated), "model.keras"),
                "--config",
                config,
                "--eval-batch-size",
                str(args.eval_batch_size),
            ]
            if args.data_dir:
                shrink_argv += ["--data-dir", args.data_dir]
            if args.max_steps:
                shrink_argv += ["--max-steps", str(args.max_steps)]
            jobs.append(
                Job(f"{gated}-shrink", shrink_argv, after=(gated,))
            )
            magnitude = f"{config}-magnitude-{budget:g}"

            def magnitude_argv(
                config=config,
                dense_model=dense_model,
                gated=gated,
                magnitude=magnitude,
                recipe=recipe,
                epochs=magnitude_epochs,
                hold=hold,
            ):
                return train_argv(
                    args,
                    config,
                    "magnitude",
                    magnitude,
                    [
                        "--dense-model",
                        dense_model,
                        "--keep",
                        kept_sizes(args.out, gated),
                        *finetune_args(epochs, recipe.magnitude_lr, recipe),
                        *hold,
                    ],
                )

            jobs.append(
                Job(
                    magnitude,
                    None,
                    after=(dense, gated),
                    make_argv=magnitude_argv,
                )
            )
            if args.direct == "kept":
                later.append(
                    direct_job(
                        f"{config}-direct-{budget:g}",
                        lambda gated=gated: kept_sizes(args.out, gated),
                        after=(gated,),
                    )
                )
            for method in args.baselines:
                name = f"{config}-{method}-{budget:g}"

                def baseline_argv(
                    method=method, name=name, config=config,
                    dense_model=dense_model, gated=gated, recipe=recipe,
                ):
                    script, extra = baseline_command(
                        method,
                        Schedule(recipe.gated_epochs, recipe.gated_lr,
                                 recipe.finetune_epochs, recipe.finetune_decay),
                    )
                    return script_argv(
                        args, script, config, name,
                        ["--dense-model", dense_model,
                         "--keep", kept_sizes(args.out, gated), *extra],
                        study_extra=method not in OWN_TRAINING_LOOP,
                    )

                later.append(
                    Job(name, None, after=(dense, gated), make_argv=baseline_argv,
                        env=baseline_environment(method))
                )  # fmt: skip
            if recipe.from_dense:
                continue
            retrain = f"{config}-retrain-{budget:g}"
            jobs.append(
                Job(
                    retrain,
                    train_argv(
                        args,
                        config,
                        "retrain",
                        retrain,
                        [
                            "--from",
                            os.path.join(run_dir(args.out, gated), "slim.keras"),
                            *finetune_args(
                                recipe.finetune_epochs,
                                recipe.magnitude_lr,
                                recipe,
                            ),
                        ],
                    ),
                    after=(f"{gated}-shrink",),
                )
            )
        # Fixed-size magnitude runs (they need the dense model only), then
        # the kept-size direct runs (after their gated run).
        jobs += later
    return jobs


def ptb_lm_config(config):
    """(units, layers) of a configuration, without importing Keras."""
    return {"small": (200, 2), "medium": (650, 2), "large": (1500, 2),
            "tiny": (16, 2)}[config]  # fmt: skip


def done(args, job):
    if job.name.endswith("-shrink"):
        return finished(args.out, job.name[: -len("-shrink")], "shrink.json")
    return finished(args.out, job.name)


def gather(args, jobs):
    study = {}
    for job in jobs:
        name = job.name[: -len("-shrink")] if job.name.endswith("-shrink") else job.name
        file = "shrink.json" if job.name.endswith("-shrink") else "results.json"
        path = os.path.join(run_dir(args.out, name), file)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                study.setdefault(name, {})[file] = json.load(f)
    path = os.path.join(args.out, "study.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(study, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def main(argv=None):
    argv_given = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    unknown = set(args.configs.split(",")) - set(RECIPES)
    if unknown or args.jobs < 1:
        print(
            f"{PROG}: error: unknown config {sorted(unknown)} or --jobs < 1",
            file=sys.stderr,
        )
        return 2
    if args.from_dense is not None and args.from_dense < 1:
        print(f"{PROG}: error: --from-dense must be >= 1", file=sys.stderr)
        return 2
    if args.finetune_epochs is not None and args.finetune_epochs < 1:
        print(f"{PROG}: error: --finetune-epochs must be >= 1", file=sys.stderr)
        return 2
    if args.gated_lr is not None and (
        args.from_dense is None or not args.gated_lr > 0
    ):
        print(
            f"{PROG}: error: --gated-lr must be > 0 and needs --from-dense",
            file=sys.stderr,
        )
        return 2
    if args.package_gate_defaults and (
        args.from_dense is None
        or args.initial_keep_probability is not None
        or args.budget_open_log_alpha is not None
    ):
        print(
            f"{PROG}: error: --package-gate-defaults needs --from-dense and "
            "neither --initial-keep-probability nor --budget-open-log-alpha",
            file=sys.stderr,
        )
        return 2
    if args.baselines and args.from_dense is None:
        print(f"{PROG}: error: --baselines needs --from-dense", file=sys.stderr)
        return 2
    if args.time_limit is not None and not args.time_limit > 0:
        print(f"{PROG}: error: --time-limit must be > 0", file=sys.stderr)
        return 2
    jobs = plan(args)
    if args.dry_run:
        for job in jobs:
            argv = job.argv or ["<after", *job.after, ">"]
            env = [f"{name}={value}" for name, value in job.env.items()]
            print(job.name + ": " + " ".join(env + argv))
        return 0
    os.makedirs(args.out, exist_ok=True)
    pending = [job for job in jobs if not done(args, job)]
    running, failed, stopped = [], [], []
    start = time.time()
    deadline = None if args.time_limit is None else start + args.time_limit
    interrupted = []

    def on_signal(signum, frame):
        interrupted.append(signum)

    previous_handler = signal.signal(signal.SIGTERM, on_signal)
    try:
        while pending or running:
            for job in list(running):
                code = job.process.poll()
                if code is None:
                    continue
                job.log.close()
                running.remove(job)
                status = "done" if code == 0 else f"FAILED (exit {code})"
                print(
                    f"[{time.time() - start:7.0f} s] {job.name} {status}",
                    flush=True,
                )
                if code:
                    failed.append(job.name)
            if interrupted or (deadline is not None and time.time() >= deadline):
                why = "SIGTERM" if interrupted else "the time limit"
                stopped = stop_jobs(running, start, why, lambda j: done(args, j))
                break
            blocked = set(failed) | {job.name for job in pending + running}
            for job in list(pending):
                if len(running) >= args.jobs:
                    break
                if set(job.after) & blocked:
                    if set(job.after) & set(failed):
                        pending.remove(job)
                        failed.append(job.name)
                        print(
                            f"{job.name} skipped: "
                            f"{set(job.after) & set(failed)} failed"
                        )
                    continue
                argv = job.argv or job.make_argv()
                job.log = open(
                    os.path.join(args.out, f"{job.name}.log"), "a", encoding="utf-8"
                )
                job.process = subprocess.Popen(
                    argv,
                    stdout=job.log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **job.env},
                )
                pending.remove(job)
                running.append(job)
                print(
                    f"[{time.time() - start:7.0f} s] {job.name} started",
                    flush=True,
                )
            time.sleep(0.5)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if running and not stopped:
            stopped += stop_jobs(running, start, "an error", lambda j: done(args, j))
    complete = not (pending or stopped or failed)
    resume = shlex.join([os.path.basename(sys.executable), os.path.relpath(SCRIPT), *(argv_given or [])])
    progress = dict(
        status="complete" if complete else ("failed" if failed else "incomplete"),
        elapsed_s=round(time.time() - start, 1),
        time_limit_s=args.time_limit,
        done=[job.name for job in jobs if done(args, job)],
        stopped=[job.name for job in stopped],
        not_started=[job.name for job in pending],
        failed=failed,
        resume=resume,
    )
    write_progress(args.out, progress)
    print(f"study: {gather(args, jobs)}; failed: {failed or 'none'}")
    if failed:
        return 1
    if not complete:
        print(
            f"incomplete: {len(stopped)} stopped, {len(pending)} not started "
            f"after {progress['elapsed_s']:.0f} s; resume with: {resume}",
            flush=True,
        )
    return 0


def stop_jobs(running, start, why, finished_job, grace=20):
    """SIGTERM to every running job (each keeps its last checkpoint), then
    SIGKILL to those still alive after `grace` seconds. Returns the jobs
    stopped; one that had written its results (`finished_job`) when the
    signal came is reported done instead."""
    for job in running:
        job.process.terminate()
    stopped = []
    end = time.time() + grace
    for job in running:
        try:
            job.process.wait(max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            job.process.kill()
            job.process.wait()
        job.log.close()
        if finished_job(job):
            print(f"[{time.time() - start:7.0f} s] {job.name} done", flush=True)
            continue
        print(
            f"[{time.time() - start:7.0f} s] {job.name} stopped at {why} "
            "(resumes from its last checkpoint)",
            flush=True,
        )
        stopped.append(job)
    running.clear()
    return stopped


def write_progress(out, progress):
    path = os.path.join(out, PROGRESS_NAME)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(progress, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)

if __name__ == "__main__":
    sys.exit(main())
