"""Penn Treebank, word level, as used by Zaremba et al. (2014), from a folder.

The folder holds `ptb.train.txt.gz`, `ptb.valid.txt.gz` and
`ptb.test.txt.gz` (Mikolov's preprocessed text, one sentence a line), which
are read directly; nothing is downloaded or copied. Every line end counts as
the token `<eos>`, which gives the standard 10,000-word vocabulary and
929,589 / 73,760 / 82,430 tokens.

Language models are trained on `batch_size` parallel streams: the token
sequence is cut into `batch_size` contiguous pieces, and window `k` holds
tokens `[k * num_steps, (k + 1) * num_steps)` of every piece, so window
`k + 1` continues window `k` in each stream and the recurrent state can be
carried from one batch to the next (truncated backpropagation through time,
as in Zaremba's `ptb_iterator`).

Example:

>>> data = load("/path/to/ptb")
>>> len(data.vocabulary), data.train.shape
(10000, (929589,))
>>> x, y = next(windows(data.train, batch_size=20, num_steps=35))
>>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
((20, 35), True)
"""

import collections
import gzip
import hashlib
import os

import numpy as np

SPLITS = ("train", "valid", "test")
EOS = "<eos>"
VOCABULARY_SIZE = 10_000
TOKEN_COUNTS = {"train": 929_589, "valid": 73_760, "test": 82_430}
MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}
ENV_VAR = "KERAS_L0_PTB_DIR"

PTB = collections.namedtuple("PTB", ["vocabulary", "train", "valid", "test"])
PTB.__doc__ = """The corpus as token ids.

Fields:
    vocabulary: list of the 10,000 words; a word's id is its index.
    train, valid, test: 1-D int32 arrays of token ids.
"""


class PTBChecksumError(ValueError):
    """A PTB file's unzipped text does not have the published md5."""


def file_name(split):
    """The file name of `split` ("train", "valid" or "test")."""
    if split not in SPLITS:
        raise ValueError(
            f"`split` must be one of {SPLITS}. Received: split={split!r}"
        )
    return f"ptb.{split}.txt.gz"


def default_data_dir():
    """The folder used when none is given: `$KERAS_L0_PTB_DIR`, or `None`.

    The package never guesses a path of its own (an installed package has
    no checkout beside it); study scripts and tests set the variable.
    """
    return os.environ.get(ENV_VAR) or None


def resolve_data_dir(data_dir=None):
    """`data_dir`, else `default_data_dir()`, checked to hold the files.

    Raises:
        FileNotFoundError: no folder was given or found, it does not exist,
            or it lacks one of the three `.gz` files.
    """
    data_dir = data_dir or default_data_dir()
    if data_dir is None:
        raise FileNotFoundError(
            "No Penn Treebank folder: pass --data-dir / `data_dir` or set "
            f"{ENV_VAR} to a folder with ptb.{{train,valid,test}}.txt.gz"
        )
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"Penn Treebank folder {data_dir!r} does not exist (set "
            f"--data-dir / `data_dir` or {ENV_VAR})"
        )
    missing = [
        name
        for name in map(file_name, SPLITS)
        if not os.path.isfile(os.path.join(data_dir, name))
    ]
    if missing:
        raise FileNotFoundError(
            f"Penn Treebank folder {data_dir!r} lacks {', '.join(missing)}"
        )
    return data_dir


def read_words(path, md5=None):
    """The tokens of one gzipped PTB file, `<eos>` at every line end.

    Args:
        path: path of a `ptb.*.txt.gz` file.
        md5: optional hex digest that the unzipped text must have.

    Returns:
        A list of str.

    Raises:
        PTBChecksumError: `md5` is given and does not match.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    if md5 is not None:
        actual = hashlib.md5(data).hexdigest()
        if actual != md5:
            raise PTBChecksumError(
                f"{path}: md5 of the unzipped text is {actual}, expected {md5}"
            )
    return data.decode("utf-8").replace("\n", f" {EOS} ").split()


def build_vocabulary(words):
    """The distinct `words`, most frequent first, ties in string order."""
    counts = collections.Counter(words)
    return sorted(counts, key=lambda word: (-counts[word], word))


def to_ids(words, vocabulary):
    """`words` as an int32 array of indices into `vocabulary`.

    Raises:
        ValueError: a word is not in `vocabulary`.
    """
    index = {word: i for i, word in enumerate(vocabulary)}
    try:
        return np.fromiter(
            (index[word] for word in words), dtype="int32", count=len(words)
        )
    except KeyError as e:
        raise ValueError(
            f"Word {e.args[0]!r} is not in the vocabulary"
        ) from None


def load(data_dir=None, verify=True):
    """Reads the three splits, vocabulary built from the training split.

    Args:
        data_dir: the folder with `ptb.{train,valid,test}.txt.gz`. Default:
            `default_data_dir()`.
        verify: check the md5 of every unzipped file against `MD5`.

    Returns:
        A `PTB` named tuple `(vocabulary, train, valid, test)`.

    Raises:
        FileNotFoundError: see `resolve_data_dir`.
        PTBChecksumError: `verify` and a file differs from the published one.
    """
    data_dir = resolve_data_dir(data_dir)
    words = {
        split: read_words(
            os.path.join(data_dir, file_name(split)),
            md5=MD5[split] if verify else None,
        )
        for split in SPLITS
    }
    vocabulary = build_vocabulary(words["train"])
    return PTB(
        vocabulary,
        *(to_ids(words[split], vocabulary) for split in SPLITS),
    )


def _check_positive(**values):
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(
                f"`{name}` must be a positive integer. Received: {value!r}"
            )


def streams(ids, batch_size):
    """`ids` cut into `batch_size` contiguous rows (the tail is dropped).

    Returns:
        An array of shape `(batch_size, len(ids) // batch_size)`, a view of
        `ids`.
    """
    _check_positive(batch_size=batch_size)
    ids = np.asarray(ids)
    length = len(ids) // batch_size
    return ids[: batch_size * length].reshape(batch_size, length)


def num_windows(num_tokens, batch_size, num_steps):
    """How many `(batch_size, num_steps)` windows `num_tokens` tokens give.

    Every window needs the token after it as its last target.
    """
    _check_positive(batch_size=batch_size, num_steps=num_steps)
    return max((num_tokens // batch_size - 1) // num_steps, 0)


class Windows:
    """The `(x, y)` windows of `ids` over `batch_size` streams, by index.

    Window `index` holds columns `[index * num_steps, (index + 1) *
    num_steps)` of `streams(ids, batch_size)` as inputs `x` and the same
    columns shifted by one token as targets `y`, both int arrays of shape
    `(batch_size, num_steps)` (views of `ids`).

    Args:
        ids: 1-D array of token ids.
        batch_size: int, number of parallel streams.
        num_steps: int, window length.

    Raises:
        ValueError: `ids` is too short for a single window.
    """

    def __init__(self, ids, batch_size, num_steps):
        self.count = num_windows(len(ids), batch_size, num_steps)
        if self.count == 0:
            raise ValueError(
                f"{len(ids)} tokens are too few for one window of "
                f"batch_size={batch_size} x num_steps={num_steps}"
            )
        self.rows = streams(ids, batch_size)
        self.batch_size = batch_size
        self.num_steps = num_steps

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        if not 0 <= index < self.count:
            raise IndexError(
                f"Window {index} out of range: there are {self.count} windows"
            )
        start = index * self.num_steps
        return (
            self.rows[:, start : start + self.num_steps],
            self.rows[:, start + 1 : start + self.num_steps + 1],
        )


def windows(ids, batch_size, num_steps):
    """An iterator over the windows of `Windows(ids, batch_size, num_steps)`,
    in order.

    Raises:
        ValueError: `ids` is too short for a single window.
    """
    return iter(Windows(ids, batch_size, num_steps))
