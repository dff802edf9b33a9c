import gzip
import hashlib
import os

import numpy as np
import pytest

from keras_l0.datasets import ptb


from ptb_helpers import DATA_DIR  # noqa: E402
from ptb_helpers import requires_data  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return ptb.load(DATA_DIR, verify=True)


def _write_gz(path, text):
    with gzip.open(path, "wb") as f:
        f.write(text.encode("utf-8"))


def _fake_folder(folder, texts):
    for split, text in texts.items():
        _write_gz(os.path.join(folder, ptb.file_name(split)), text)
    return str(folder)


def test_windows_cover_contiguous_streams():
    ids = np.arange(103)
    windows = ptb.Windows(ids, batch_size=4, num_steps=3)
    # 103 // 4 = 25 tokens a stream, (25 - 1) // 3 = 8 windows.
    assert len(windows) == ptb.num_windows(103, 4, 3) == 8
    rows = ptb.streams(ids, 4)
    np.testing.assert_array_equal(rows[:, 0], [0, 25, 50, 75])
    for index in range(len(windows)):
        x, y = windows[index]
        assert x.shape == y.shape == (4, 3)
        np.testing.assert_array_equal(y, x + 1)
        if index:
            previous_x, previous_y = windows[index - 1]
            np.testing.assert_array_equal(x[:, 0], previous_x[:, -1] + 1)
            np.testing.assert_array_equal(x[:, 0], previous_y[:, -1])
    xs = np.concatenate([x for x, _ in ptb.windows(ids, 4, 3)], axis=1)
    np.testing.assert_array_equal(xs, rows[:, :24])


def test_windows_targets_are_inputs_shifted_by_one():
    ids = np.random.default_rng(0).integers(0, 50, 500)
    rows = ptb.streams(ids, 5)
    for index, (x, y) in enumerate(ptb.windows(ids, 5, 7)):
        start = index * 7
        np.testing.assert_array_equal(x, rows[:, start : start + 7])
        np.testing.assert_array_equal(y, rows[:, start + 1 : start + 8])


def test_windows_reject_bad_sizes_and_indices():
    with pytest.raises(ValueError, match="too few"):
        ptb.Windows(np.arange(10), batch_size=5, num_steps=2)
    with pytest.raises(ValueError, match="batch_size"):
        ptb.streams(np.arange(10), 0)
    windows = ptb.Windows(np.arange(100), 2, 5)
    with pytest.raises(IndexError):
        windows[len(windows)]
    with pytest.raises(IndexError):
        windows[-1]


def test_vocabulary_is_by_count_then_string():
    words = "b a c b a d b".split()
    assert ptb.build_vocabulary(words) == ["b", "a", "c", "d"]
    assert ptb.build_vocabulary(list(reversed(words))) == ["b", "a", "c", "d"]
    ids = ptb.to_ids(["a", "d"], ["b", "a", "c", "d"])
    assert ids.dtype == np.int32 and ids.tolist() == [1, 3]
    with pytest.raises(ValueError, match="'z'"):
        ptb.to_ids(["z"], ["a"])


def test_read_words_marks_line_ends_and_checks_md5(tmp_path):
    text = " the cat \n sat <unk> \n"
    path = tmp_path / "ptb.train.txt.gz"
    _write_gz(path, text)
    assert ptb.read_words(path) == "the cat <eos> sat <unk> <eos>".split()
    md5 = hashlib.md5(text.encode()).hexdigest()
    assert len(ptb.read_words(path, md5=md5)) == 6
    with pytest.raises(ptb.PTBChecksumError, match="expected 0+"):
        ptb.read_words(path, md5="0" * 32)


def test_load_fake_folder(tmp_path):
    folder = _fake_folder(
        tmp_path,
        {"train": " a b \n b c \n", "valid": " c \n", "test": " a a \n"},
    )
    data = ptb.load(folder, verify=False)
    assert data.vocabulary == ["<eos>", "b", "a", "c"]
    assert data.train.tolist() == [2, 1, 0, 1, 3, 0]
    assert data.valid.tolist() == [3, 0]
    assert data.test.tolist() == [2, 2, 0]
    with pytest.raises(ptb.PTBChecksumError):
        ptb.load(folder)


def test_missing_folder_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(ptb.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ptb.resolve_data_dir(str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="lacks ptb.train.txt.gz"):
        ptb.resolve_data_dir(str(tmp_path))
    _write_gz(tmp_path / "ptb.train.txt.gz", "a\n")
    with pytest.raises(FileNotFoundError, match="lacks ptb.valid.txt.gz, "):
        ptb.load(str(tmp_path))
    # No guessed folder: only the argument or the environment variable.
    monkeypatch.chdir(tmp_path)
    assert ptb.default_data_dir() is None
    with pytest.raises(FileNotFoundError, match=ptb.ENV_VAR):
        ptb.resolve_data_dir()


def test_environment_variable_names_the_folder(tmp_path, monkeypatch):
    folder = _fake_folder(
        tmp_path, {"train": " a \n", "valid": " a \n", "test": " a \n"}
    )
    monkeypatch.setenv(ptb.ENV_VAR, folder)
    assert ptb.default_data_dir() == folder
    assert ptb.resolve_data_dir() == folder
    with pytest.raises(FileNotFoundError):
        ptb.resolve_data_dir(str(tmp_path / "other"))


@requires_data
def test_vocabulary_and_token_counts(data):
    assert len(data.vocabulary) == ptb.VOCABULARY_SIZE == 10_000
    assert len(set(data.vocabulary)) == 10_000
    assert ptb.EOS in data.vocabulary and "<unk>" in data.vocabulary
    counts = {split: len(getattr(data, split)) for split in ptb.SPLITS}
    assert counts == ptb.TOKEN_COUNTS == {
        "train": 929_589,
        "valid": 73_760,
        "test": 82_430,
    }
    for split in ptb.SPLITS:
        ids = getattr(data, split)
        assert ids.dtype == np.int32
        assert 0 <= ids.min() and ids.max() < 10_000
    eos = data.vocabulary.index(ptb.EOS)
    assert np.count_nonzero(data.train == eos) == 42_068
    # Most frequent first: "the" leads the training text.
    assert data.vocabulary[0] == "the"


@requires_data
def test_training_windows_are_zaremba_batches(data):
    batch_size, num_steps = 20, 35
    windows = ptb.Windows(data.train, batch_size, num_steps)
    length = len(data.train) // batch_size
    assert len(windows) == (length - 1) // num_steps == 1327
    x, y = windows[0]
    np.testing.assert_array_equal(x[1], data.train[length : length + 35])
    np.testing.assert_array_equal(y[1], data.train[length + 1 : length + 36])
    # Stream 7 is one contiguous piece of the text across windows.
    stream = np.concatenate(
        [windows[k][0][7] for k in range(len(windows))]
    )
    np.testing.assert_array_equal(
        stream, data.train[7 * length : 7 * length + len(stream)]
    )
