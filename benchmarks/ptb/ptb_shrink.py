"""Shrinks a trained gated PTB language model and evaluates both forms.

Reads the `model.keras` that `ptb_language_model.py --model gated` wrote,
removes its closed neurons with `keras_l0.shrink.shrink`, writes
`slim.keras` and `shrink.json` into `--out` (default: the model's folder),
and prints the
neurons and parameters kept, the largest logit difference gated vs slim on
a validation window, and the validation and test perplexity of both models
(carried states, as in training). The input model is not modified.

TFLite export of the result is the package CLI's job:
`keras-l0-shrink model.keras -o <folder>`.

Example:

```
python benchmarks/ptb/ptb_shrink.py runs/ptb-small-gated/model.keras \\
    --config small
```
"""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_l0.datasets import ptb  # noqa: E402
from keras_l0.shrink import ShrinkError  # noqa: E402
from keras_l0.shrink import shrink  # noqa: E402

import ptb_lm  # noqa: E402

PROG = os.path.basename(__file__)
SLIM_NAME = "slim.keras"
REPORT_NAME = "shrink.json"


def build_parser():
    parser = ptb_lm.ArgumentParser(
        prog=PROG,
        description="Shrink a gated PTB language model and compare the "
        "perplexity of the gated and the slim model.",
    )
    parser.add_argument("model", help="the gated model.keras")
    parser.add_argument(
        "--config",
        choices=sorted(ptb_lm.CONFIGS),
        default="small",
        help="the training configuration (its batch size and unrolled "
        "steps are used for the evaluation; default: small)",
    )
    parser.add_argument(
        "--num-steps",
        type=ptb_lm.positive_int,
        help="unrolled steps per window (default: the config's)",
    )
    parser.add_argument("--data-dir", help="see ptb_language_model.py")
    parser.add_argument(
        "--out", help="folder for slim.keras and shrink.json (default: the "
        "model's folder)"
    )
    parser.add_argument(
        "--eval-batch-size",
        type=ptb_lm.positive_int,
        help="streams for the perplexity (default: the config's batch size)",
    )
    parser.add_argument(
        "--max-steps",
        type=ptb_lm.positive_int,
        help="evaluate only the first N windows of each split",
    )
    return parser


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        if not os.path.isfile(args.model):
            raise ptb_lm.UsageError(f"{args.model!r} is not a file")
        config = ptb_lm.CONFIGS[args.config]
        if args.num_steps:
            config = dataclasses.replace(config, num_steps=args.num_steps)
        try:
            data = ptb.load(args.data_dir)
        except (FileNotFoundError, ptb.PTBChecksumError) as e:
            raise ptb_lm.UsageError(str(e))
        gated = keras.models.load_model(args.model, compile=False)
        try:
            slim = shrink(gated)
        except ShrinkError as e:
            raise ptb_lm.UsageError(f"cannot shrink {args.model!r}: {e}")
    except ptb_lm.UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    out = args.out or os.path.dirname(os.path.abspath(args.model))
    os.makedirs(out, exist_ok=True)
    batch_size = args.eval_batch_size or config.batch_size
    x, _ = ptb.Windows(data.valid, batch_size, config.num_steps)[0]
    difference = float(
        np.max(np.abs(np.asarray(gated(x)) - np.asarray(slim(x))))
    )
    report = dict(
        model=os.path.abspath(args.model),
        config=args.config,
        eval_batch_size=batch_size,
        num_steps=config.num_steps,
        max_windows=args.max_steps,
        max_logit_difference=difference,
    )
    for name, model in (("gated", gated), ("slim", slim)):
        report[name] = ptb_lm.evaluate(
            model, data, batch_size, config.num_steps, args.max_steps
        )
    ptb_lm.write_atomically(os.path.join(out, SLIM_NAME), slim.save)
    ptb_lm.write_json(os.path.join(out, REPORT_NAME), report)
    partial = f" (first {args.max_steps} windows)" if args.max_steps else ""
    for name in ("gated", "slim"):
        entry = report[name]
        print(
            f"{name}: {ptb_lm.format_counts(entry['neurons'])}, "
            f"{entry['params']:,} params, valid ppl "
            f"{entry['valid_perplexity']:.2f}, test ppl "
            f"{entry['test_perplexity']:.2f}{partial}"
        )
    print(
        f"max |logit gated - slim| on a validation window: {difference:.3g}; "
        f"saved {os.path.join(out, SLIM_NAME)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
