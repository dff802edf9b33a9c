"""The command of every reviewer baseline of the PTB study, by method.

Each baseline starts from the trained dense model at the gated run's kept
sizes and gets the gated-from-dense training budget: `gated_epochs` epochs
at `gated_lr`, then `finetune_epochs` epochs decaying by `finetune_decay`
(the first of them still at `gated_lr`). `ptb_reproduce.py --baselines`
runs them after the gated run; `ptb_report.py` reads their folders
`<config>-<method>-<budget>`.

| method | script | what it is |
|---|---|---|
| `iss` | `ptb_baseline.py --method iss` | group lasso on ISS components, cut, fine-tuned |
| `darb` | `ptb_baseline.py --method darb` | density-adaptive regular-block masks |
| `lds` | `ptb_lds.py` | LDS-similarity pruning in stages, distilled |
| `tfmot` | `ptb_tfmot.py` | TFMOT `prune_low_magnitude` on a `tf_keras` twin |
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The training budget every pruned model of a budget gets."""

    gated_epochs: int
    gated_lr: float
    finetune_epochs: int
    finetune_decay: float

    @property
    def epochs(self):
        return self.gated_epochs + self.finetune_epochs


def _prune_then_finetune(method):
    def arguments(schedule):
        return [
            "--method", method,
            "--epochs", str(schedule.gated_epochs),
            "--lr", f"{schedule.gated_lr:g}",
            "--finetune-epochs", str(schedule.finetune_epochs),
            "--finetune-lr", f"{schedule.gated_lr:g}",
            "--finetune-decay", f"{schedule.finetune_decay:g}",
        ]  # fmt: skip

    return "ptb_baseline.py", arguments


def stage_epochs(epochs, stages=3):
    """`epochs` split over at most `stages` stages, later ones taking the
    rest: 7 -> 2,2,3."""
    count = max(1, min(stages, epochs))
    parts = [epochs // count] * count
    parts[-1] += epochs - sum(parts)
    return parts


def _lds(schedule):
    parts = stage_epochs(schedule.epochs)
    return [
        "--stages", str(len(parts)),
        "--epochs-per-stage", ",".join(map(str, parts)),
        "--lr", f"{schedule.gated_lr:g}",
        "--decay-after", str(schedule.gated_epochs + 1),
        "--lr-decay", f"{schedule.finetune_decay:g}",
    ]  # fmt: skip


def _tfmot(schedule):
    return [
        "--epochs", str(schedule.epochs),
        "--ramp-epochs", str(schedule.gated_epochs),
        "--lr", f"{schedule.gated_lr:g}",
        "--lr-decay", f"{schedule.finetune_decay:g}",
    ]  # fmt: skip


COMMANDS = {
    "iss": _prune_then_finetune("iss"),
    "darb": _prune_then_finetune("darb"),
    "lds": ("ptb_lds.py", _lds),
    "tfmot": ("ptb_tfmot.py", _tfmot),
}
# Methods whose training loop is not Keras 3's: they do not take the
# study's `--extra` training arguments (e.g. `--steps-per-execution`, which
# would make TFMOT's per-batch pruning-step callback count every tenth step).
OWN_TRAINING_LOOP = frozenset({"tfmot"})
# Keras backends a method needs whatever the study runs under: TFMOT trains a
# `tf_keras` twin and exports with TensorFlow.
BACKENDS = {"tfmot": "tensorflow"}


def environment(method):
    """Environment variables that `method`'s job sets over the study's."""
    backend = BACKENDS.get(method)
    return {} if backend is None else {"KERAS_BACKEND": backend}


def command(method, schedule):
    """`(script, arguments)` of `method` under `schedule`, without the
    config, data, output, sizes and dense-model arguments that every
    baseline takes alike."""
    script, arguments = COMMANDS[method]
    return script, arguments(schedule)
