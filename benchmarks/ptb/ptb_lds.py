"""The LDS pruning baseline on Penn Treebank (Chatzikonstantinou et al.,
"Recurrent neural network pruning using dynamical systems and iterative
fine-tuning", Neural Networks, 2021).

The method as its abstract describes it: weight vectors are read as
time-evolving signals and modelled by linear dynamical systems (LDSs);
vectors with similar dynamics are redundant and pruned; the pruned model
is fine-tuned with a discrimination-aware L2 regulariser that penalises
the weights whose impact on the output is small; and the fine-tuning is
iterative, a bigger model guiding an increasingly smaller pruned one.

Here a trained dense model (`--dense-model`) is cut in `--stages` stages,
the embedding and hidden sizes shrinking geometrically to `--keep`. Each
stage fits an LDS to every neuron (`lds_dynamics`), removes neurons from
the most similar pairs (`keras_l0.fixed_gate_model` + `keras_l0.shrink`, as
`ptb_lm.magnitude_prune` does) and fine-tunes the slim model with the
previous stage's model as its teacher. The 7 epochs of the gated runs it is
compared with (4 at lr 0.25, 3 at 0.25 * 0.5^e) are split over the stages
(2 + 2 + 3: the last stage's learning rate decays). Every epoch writes a
checkpoint; `--resume` continues mid-stage. `--out` ends with `model.keras`
(the final slim plain model) and `results.json`. No TensorFlow import: it
runs on the TensorFlow and JAX backends.

Choices the description leaves open (also in results.json, `choices`):

CHOICES

Example:

```
python benchmarks/ptb/ptb_lds.py --config small \\
    --dense-model runs/ptb-s9/small-dense/model.keras --keep 200,120,100 \\
    --out runs/ptb-small-lds
```
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_l0.datasets import ptb  # noqa: E402
from keras_l0.gate_copy import fixed_gate_model  # noqa: E402
from keras_l0.shrink import shrink  # noqa: E402

import lds_dynamics  # noqa: E402
import ptb_language_model  # noqa: E402
import ptb_lm  # noqa: E402
from ptb_lm import UsageError  # noqa: E402

CHOICES = [
    "A neuron is an embedding dimension or an LSTM hidden unit; its signal "
    "is its incoming weight vector: an embedding column over the word ids "
    "(ordered by frequency) as time, or a hidden unit's kernel, "
    "recurrent-kernel and bias entries as time with its 4 gate blocks as "
    "channels (the trained dense model has no training snapshots to use as "
    "time).",
    "Each signal is fitted, without mean removal, by an output-only LDS of "
    "order --order (default 4) by subspace identification: block Hankel "
    "matrix, rank-r SVD, C and A from the shift-invariant observability "
    "matrix.",
    "The dissimilarity of two neurons is a Martin-type distance, -sum log "
    "cos^2 of the principal angles between the finite-horizon "
    "observability subspaces (twice the Hankel depth) of their LDSs: "
    "invariant to scaling, sign and state basis.",
    "Pruning, per neuron group and stage: while the group is above the "
    "stage size, the currently most similar pair loses the neuron of "
    "smaller L2 norm of all its weights (ptb_lm.neuron_norms); all groups "
    "are decided on the stage's starting model.",
    "Stages: --stages (default 3) cuts from the dense sizes to --keep with "
    "geometrically interpolated sizes (rounded), each cut followed by "
    "fine-tuning.",
    "Epochs: the 7 of the compared gated runs are split over the stages, "
    "later stages taking the remainder (2+2+3); the learning rate follows "
    "one global schedule, --lr (0.25) for the first --decay-after (5) "
    "epochs then times --lr-decay (0.5) per epoch, so the last stage runs "
    "at 0.25, 0.125, 0.0625 like the gated runs' fine-tuning (Zaremba "
    "scale, SGD, the config's gradient clip).",
    "Iterative guidance: every stage's student is distilled from the "
    "previous stage's fine-tuned model (stage 1: the dense model), loss = "
    "cross-entropy + --distill (0.5) * KL(teacher || student) of the "
    "token softmaxes at temperature 1, the teacher run without dropout on "
    "the same windows with its own carried states.",
    "Discrimination-aware L2: each neuron's incoming weights (those of its "
    "signal) get the L2 coefficient --l2 (1e-6, per-token loss units) "
    "times mean(impact) / impact, capped at 10x, where impact is the norm "
    "of the neuron's outgoing weights (its row of the next layer's kernel), "
    "fixed at the start of the stage; the softmax layer is not "
    "regularised.",
]
__doc__ = __doc__.replace("CHOICES", "\n".join(f"- {c}" for c in CHOICES), 1)

PROG = os.path.basename(__file__)
NOT_RUN_DEFINING = ptb_language_model.NOT_RUN_DEFINING
DEFAULT_EPOCHS = 7


def distillation_loss(student_logits, teacher_logits):
    """Mean over tokens of KL(softmax(teacher) || softmax(student))."""
    teacher_log_p = ops.log_softmax(teacher_logits, axis=-1)
    student_log_p = ops.log_softmax(student_logits, axis=-1)
    return ops.mean(
        ops.sum(ops.exp(teacher_log_p) * (teacher_log_p - student_log_p), -1)
    )


class DistillModel(keras.Model):
    """The carried-state student of a stage with its frozen teacher.

    Calls give the student's logits. Training calls also add
    `distill * distillation_loss` against the teacher's logits on the same
    window (its own carried states, no dropout) and the
    discrimination-aware L2 term as model losses. `stack`, `reset_carry`
    and `to_model` are those of `CarriedStateModel` (for `ResetCarry` and
    `ptb_language_model.EpochEnd`).

    Args:
        student, teacher: plain chain models (`teacher` may be None).
        batch_size: int, parallel streams.
        distill: float, weight of the distillation term.
        l2_scales: None or one array per neuron group (embedding, then each
            LSTM) of per-neuron L2 coefficients.
    """

    def __init__(self, student, teacher, batch_size, distill=0.0,
                 l2_scales=None, **kwargs):  # fmt: skip
        super().__init__(name="lds_distill", **kwargs)
        self.student = ptb_lm.CarriedStateModel(student, batch_size)
        self.distill = float(distill)
        self.teacher = None
        if teacher is not None and self.distill > 0:
            self.teacher = ptb_lm.CarriedStateModel(teacher, batch_size)
            self.teacher.trainable = False
        self.l2_scales = None
        if l2_scales is not None:
            self.l2_scales = [np.asarray(s, "float32") for s in l2_scales]
        self(np.zeros((self.student.batch_size, 1), "int32"))
        self.reset_carry()

    @property
    def stack(self):
        return self.student.stack

    def call(self, tokens, training=False):
        logits = self.student(tokens, training=training)
        if training and self.teacher is not None:
            teacher = ops.stop_gradient(self.teacher(tokens, training=False))
            self.add_loss(self.distill * distillation_loss(logits, teacher))
        if training and self.l2_scales is not None:
            self.add_loss(self.discrimination_l2())
        return logits

    def discrimination_l2(self):
        """sum over neurons of coefficient * |incoming weights|^2."""
        layers = [layer for layer in self.student.stack if layer.weights]
        total = 0.0
        for layer, scale in zip(layers, self.l2_scales):
            if isinstance(layer, keras.layers.Embedding):
                total = total + ops.sum(ops.square(layer.embeddings) * scale)
                continue
            cell, scale = layer.cell, np.tile(scale, 4)
            for weight in (cell.kernel, cell.recurrent_kernel, cell.bias):
                total = total + ops.sum(ops.square(weight) * scale)
        return total

    def reset_carry(self):
        self.student.reset_carry()
        if self.teacher is not None:
            self.teacher.reset_carry()

    def to_model(self, model):
        return self.student.to_model(model)


def weighted_layers(model):
    layers = [layer for layer in ptb_lm.chain_layers(model) if layer.weights]
    ptb_lm.check_plain_chain(layers)
    return layers


def neuron_signals(model):
    """The LDS signals `(neurons, channels, time)` of every neuron group."""
    signals = []
    for layer in weighted_layers(model)[:-1]:
        if isinstance(layer, keras.layers.Embedding):
            signals.append(
                lds_dynamics.embedding_signals(layer.get_weights()[0])
            )
        else:
            signals.append(lds_dynamics.lstm_signals(*layer.get_weights()))
    return signals


def outgoing_norms(model):
    """Per neuron group, the norms of the rows of the next kernel."""
    layers = weighted_layers(model)
    return [
        np.linalg.norm(layer.get_weights()[0], axis=1) for layer in layers[1:]
    ]


def l2_scales(model, l2, cap=10.0):
    """Discrimination-aware L2 coefficients, `l2 * mean / impact` capped."""
    scales = []
    for impact in outgoing_norms(model):
        ratio = np.mean(impact) / np.maximum(impact, 1e-12)
        scales.append(l2 * np.minimum(ratio, cap))
    return scales


def lds_prune(model, keep, order=4):
    """A smaller copy of a plain model by LDS similarity pruning.

    Returns:
        `(slim_model, kept)` as `ptb_lm.magnitude_prune` does.
    """
    norms = ptb_lm.neuron_norms(model)
    sizes = [len(group) for group in norms]
    if len(keep) != len(sizes) or not all(
        1 <= k <= n for k, n in zip(keep, sizes)
    ):
        raise ValueError(
            f"Kept sizes must be {len(sizes)} sizes in [1, current size]. "
            f"Received: {list(keep)} for sizes {sizes}"
        )
    kept = []
    for signals, group_norms, size in zip(neuron_signals(model), norms, keep):
        if size == len(group_norms):
            kept.append(np.arange(size))
            continue
        distances = lds_dynamics.lds_distances(signals, order)
        kept.append(lds_dynamics.prune_similar(distances, group_norms, size))
    lstms = [
        layer.name
        for layer in ptb_lm.chain_layers(model)
        if ptb_lm.is_recurrent(layer)
    ]
    gated = fixed_gate_model(
        model, dict(zip(lstms, kept[1:])), {lstms[0]: kept[0]}
    )
    return shrink(gated), kept


def stage_sizes(dense, keep, stages):
    """Geometric interpolation from `dense` to `keep` sizes, per stage."""
    plan = []
    for stage in range(1, stages + 1):
        fraction = stage / stages
        plan.append(
            [
                max(k, min(d, round(d * (k / d) ** fraction)))
                for d, k in zip(dense, keep)
            ]
        )
    return plan


def split_epochs(total, stages):
    """`total` epochs over `stages`, the later stages taking the rest."""
    base, extra = divmod(total, stages)
    return [base + (i >= stages - extra) for i in range(stages)]


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
        description="LDS similarity pruning of a trained dense PTB model "
        "with iterative distillation fine-tuning.",
    )
    add = parser.add_argument
    add("--config", choices=sorted(ptb_lm.CONFIGS), default="small")
    add("--dense-model", required=True, help="the trained dense model.keras")
    add("--keep", type=_sizes, required=True,
        help="final sizes EMBEDDING,UNITS1,UNITS2")  # fmt: skip
    add("--stages", type=ptb_lm.positive_int, default=3)
    add("--epochs-per-stage", type=_sizes,
        help=f"e.g. 2,2,3 (default: {DEFAULT_EPOCHS} epochs split over the "
        "stages, later stages taking the rest)")  # fmt: skip
    add("--lr", type=float, default=0.25,
        help="learning rate (Zaremba scale) before the decay")  # fmt: skip
    add("--lr-decay", type=float, default=0.5)
    add("--decay-after", type=int, default=5,
        help="epochs in all at --lr before the decay (5: as the gated "
        "runs' 4 training and first fine-tuning epochs)")  # fmt: skip
    add("--l2", type=float, default=1e-6,
        help="discrimination-aware L2 coefficient (0: none)")  # fmt: skip
    add("--distill", type=float, default=0.5,
        help="weight of the KL to the previous stage's model (0: "
        "none)")  # fmt: skip
    add("--order", type=ptb_lm.positive_int, default=4, help="LDS order")
    add("--out", help="output folder (default: runs/ptb-<config>-lds)")
    add("--resume", action="store_true")
    add("--data-dir", help=f"PTB folder (default: ${ptb.ENV_VAR})")
    add("--max-steps", type=ptb_lm.positive_int,
        help="use only the first N windows of every epoch and "
        "evaluation")  # fmt: skip
    add("--steps-per-execution", type=ptb_lm.positive_int, default=1)
    add("--eval-batch-size", type=ptb_lm.positive_int, default=1)
    add("--seed", type=int, default=0)
    parser.set_defaults(model="lds")
    return parser


def check_args(args):
    if len(args.keep) != 3 or min(args.keep) < 1:
        raise UsageError("--keep takes three sizes >= 1: EMB,UNITS1,UNITS2")
    if args.epochs_per_stage is None:
        args.epochs_per_stage = split_epochs(DEFAULT_EPOCHS, args.stages)
    if len(args.epochs_per_stage) != args.stages or min(
        args.epochs_per_stage
    ) < 0:
        raise UsageError("--epochs-per-stage needs --stages sizes >= 0")
    if not args.lr > 0 or not 0 < args.lr_decay <= 1 or args.decay_after < 0:
        raise UsageError("--lr > 0, --lr-decay in (0, 1], --decay-after >= 0")
    if args.l2 < 0 or args.distill < 0:
        raise UsageError("--l2 and --distill must be >= 0")
    if not os.path.isfile(args.dense_model):
        raise UsageError(f"no such file: --dense-model {args.dense_model}")


def previous_state(args, run):
    """The state of the run to resume (`ptb_language_model.previous_state`
    with this script's arguments)."""
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
    given = ptb_language_model.run_defining(args)
    for name in NOT_RUN_DEFINING:
        given.pop(name, None)
    differing = sorted(
        name
        for name in set(state["args"]) | set(given)
        if state["args"].get(name) != given.get(name)
    )
    if differing:
        raise UsageError(
            "--resume: arguments differ from the run's: "
            + ", ".join(
                f"--{name.replace('_', '-')} (was {state['args'].get(name)!r})"
                for name in differing
            )
        )
    return state


def learning_rate(args, epoch):
    """The learning rate of 0-based global `epoch`."""
    return args.lr * args.lr_decay ** max(0, epoch + 1 - args.decay_after)


def load(path):
    return keras.models.load_model(path, compile=False)


def begin_stage(args, run, state, plain, stage, sizes):
    """Saves the teacher, cuts `plain` to `sizes`, records the stage."""
    if stage == 0:
        teacher = os.path.abspath(args.dense_model)
    else:
        teacher = f"teacher-{stage + 1}.keras"  # in --out
        ptb_lm.write_atomically(os.path.join(run.out, teacher), plain.save)
    slim, kept = lds_prune(plain, sizes, args.order)
    state["stages"].append(
        dict(
            stage=stage + 1,
            sizes=[int(s) for s in sizes],
            epochs=args.epochs_per_stage[stage],
            teacher=teacher,
            kept=[k.tolist() for k in kept],
            l2_scales=[s.tolist() for s in l2_scales(slim, args.l2)],
        )
    )
    run.save_checkpoint(slim, state, stage, 0)
    old = os.path.join(run.out, f"teacher-{stage}.keras")
    if stage > 1 and os.path.exists(old):
        os.remove(old)
    print(
        f"stage {stage + 1}: LDS pruning to {','.join(map(str, sizes))}",
        flush=True,
    )
    return slim


def train_stage(args, config, data, run, state, plain, stage):
    info = state["stages"][stage]
    epochs = info["epochs"]
    done = state["epoch"] if state["phase"] == stage else 0
    if done >= epochs:
        return
    offset = sum(args.epochs_per_stage[:stage])
    rate = lambda epoch: learning_rate(args, offset + epoch)  # noqa: E731
    teacher = None
    if args.distill > 0:
        teacher = load(os.path.join(run.out, info["teacher"]))
    scales = info["l2_scales"] if args.l2 > 0 else None
    model = DistillModel(
        plain, teacher, config.batch_size, args.distill, scales
    )
    ptb_lm.compile_model(
        model,
        lr=config.lr,
        clip=config.clip,
        num_steps=config.num_steps,
        steps_per_execution=args.steps_per_execution,
    )
    windows = lambda ids: ptb_lm.WindowDataset(  # noqa: E731
        ids, config.batch_size, config.num_steps, args.max_steps
    )
    model.fit(
        windows(data.train),
        validation_data=windows(data.valid),
        epochs=epochs,
        initial_epoch=done,
        shuffle=False,
        verbose=0,
        callbacks=[
            ptb_lm.ResetCarry(),
            keras.callbacks.LearningRateScheduler(
                lambda epoch: rate(epoch) * config.num_steps
            ),
            ptb_language_model.EpochEnd(
                run, state, plain, stage, f"stage{stage + 1}", epochs, rate
            ),
        ],
    )


def lstm_params(model):
    return int(
        sum(
            layer.count_params()
            for layer in ptb_lm.chain_layers(model)
            if ptb_lm.is_recurrent(layer)
        )
    )


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        check_args(args)
        config = ptb_lm.CONFIGS[args.config]
        run = ptb_language_model.Run(
            args.out or os.path.join("runs", f"ptb-{args.config}-lds")
        )
        state = previous_state(args, run)
        try:
            data = ptb.load(args.data_dir)
        except (FileNotFoundError, ptb.PTBChecksumError) as e:
            raise UsageError(str(e))
        keras.utils.set_random_seed(args.seed)
        if state is None:
            plain = load(args.dense_model)
            try:
                dense_sizes = [len(n) for n in ptb_lm.neuron_norms(plain)]
            except ValueError as e:
                raise UsageError(f"--dense-model {args.dense_model}: {e}")
            if any(k > d for k, d in zip(args.keep, dense_sizes)):
                raise UsageError(
                    f"--keep {args.keep} exceeds the dense sizes {dense_sizes}"
                )
            os.makedirs(run.out, exist_ok=True)
            state = dict(
                args=ptb_language_model.run_defining(args),
                history=[],
                stages=[],
                phase=0,
                epoch=0,
                dense_sizes=dense_sizes,
            )
            for name in NOT_RUN_DEFINING:
                state["args"].pop(name, None)
        else:
            plain = load(os.path.join(run.out, state["checkpoint"]))
        plan = stage_sizes(state["dense_sizes"], args.keep, args.stages)
        for stage, sizes in enumerate(plan):
            if stage < state["phase"]:
                continue
            if len(state["stages"]) <= stage:
                plain = begin_stage(args, run, state, plain, stage, sizes)
            train_stage(args, config, data, run, state, plain, stage)
        results = ptb_language_model.finish(
            args, config, data, run, plain, state
        )
        results.update(
            method="lds",
            lstm_params=lstm_params(plain),
            keep=list(args.keep),
            stages=[entry["sizes"] for entry in state["stages"]],
            epochs_per_stage=list(args.epochs_per_stage),
            dense_model=os.path.abspath(args.dense_model),
            choices=CHOICES,
        )
        ptb_lm.write_json(os.path.join(run.out, "results.json"), results)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
