"""Checkpoints: model.save / fastrnn.load round trips, exact resumption, atomic writes,
and clear errors (never a wrong model, never unpickling) for bad files."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from helpers import flat_params, random_model_batch

import fastrnn
import fastrnn.io
from fastrnn.io import CheckpointError, load_checkpoint

TEXT = "the quick brown fox jumps over the lazy dog. " * 8


def text_model(**options):
    settings = dict(cell="lstm", hidden_size=6, num_layers=2, seed=0,
                    optimizer=fastrnn.optim.Adam(lr=0.02))
    settings.update(options)
    return fastrnn.SequenceModel.from_text(TEXT, **settings)


def folder_listing(folder):
    return sorted(os.listdir(folder))


def optimizer_states_equal(first, second):
    first, second = first.state_dict(), second.state_dict()
    assert first.keys() == second.keys()
    for key, value in first.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == second[key].dtype
            np.testing.assert_array_equal(second[key], value, err_msg=key)
        else:
            assert second[key] == value, key


# ---------------------------------------------------------------------- round trip

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip_keeps_weights_optimizer_vocabulary_and_config(tmp_path, dtype):
    model = text_model(dtype=dtype, dropout=0.25, max_norm=1.0)
    model.fit(TEXT, window=8, batch_size=4, steps=5, progress=False)
    model.skipped_steps = 2
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastrnn.load(path)
    assert loaded.config == model.config
    assert loaded.vocab == model.vocab
    assert loaded.skipped_steps == 2
    assert list(loaded.params) == list(model.params)
    for name, value in model.params.items():
        assert loaded.params[name].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(loaded.params[name], value, err_msg=name)
    assert type(loaded.optimizer) is type(model.optimizer)
    optimizer_states_equal(model.optimizer, loaded.optimizer)
    np.testing.assert_array_equal(loaded.encode("fox?"), model.encode("fox?"))
    np.testing.assert_array_equal(loaded.predict(model.encode("lazy dog")),
                                  model.predict(model.encode("lazy dog")))
    assert loaded.generate("the ", n=20, seed=4) == model.generate("the ", n=20, seed=4)


def test_round_trip_of_a_float_model_with_an_untouched_optimizer(tmp_path):
    model = fastrnn.SequenceModel(cell="gru", input_size=3, hidden_size=4, output_size=2,
                                  loss="mse", output="last", bidirectional=True,
                                  optimizer=fastrnn.optim.SGD(lr=0.1, momentum=0.9,
                                                              nesterov=True),
                                  seed=np.int64(5))
    model.save(tmp_path / "model.npz")
    loaded = fastrnn.load(tmp_path / "model.npz")
    assert loaded.vocab is None and loaded.config == model.config
    optimizer_states_equal(model.optimizer, loaded.optimizer)
    np.testing.assert_array_equal(flat_params(loaded), flat_params(model))


OPTIMIZERS = {"adam": lambda: fastrnn.optim.Adam(lr=0.02),
              "sgd_momentum": lambda: fastrnn.optim.SGD(lr=0.1, momentum=0.9)}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_save_load_continue_equals_an_uninterrupted_run_bit_for_bit(tmp_path, optimizer,
                                                                    dropout):
    def fresh():
        return fastrnn.SequenceModel(cell="lstm", input_size=3, hidden_size=5, output_size=4,
                                     num_layers=2, dropout=dropout, max_norm=0.5,
                                     optimizer=OPTIMIZERS[optimizer](), seed=1)

    rng = np.random.default_rng(9)
    batches = [random_model_batch(rng, fresh(), 6, 3, use_lengths=True) for _ in range(12)]

    uninterrupted = fresh()
    expected = [uninterrupted.train_step(x, y, lengths=n) for x, y, n in batches]

    first_half = fresh()
    losses = [first_half.train_step(x, y, lengths=n) for x, y, n in batches[:6]]
    first_half.save(tmp_path / "half.npz")
    resumed = fastrnn.load(tmp_path / "half.npz")
    losses += [resumed.train_step(x, y, lengths=n) for x, y, n in batches[6:]]

    assert losses == expected  # bit for bit
    np.testing.assert_array_equal(flat_params(resumed), flat_params(uninterrupted))
    optimizer_states_equal(uninterrupted.optimizer, resumed.optimizer)


# ---------------------------------------------------------------------- atomicity

def failing_savez(exception):
    """An np.savez that writes half an archive, then fails."""
    def savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half an archive")
        raise exception
    return savez


@pytest.mark.parametrize("failure", ["savez-oserror", "savez-keyboardinterrupt",
                                     "replace-oserror"])
def test_a_failure_mid_save_leaves_the_previous_file_intact(tmp_path, monkeypatch, failure):
    path = tmp_path / "model.npz"
    model = text_model()
    model.save(path)
    previous = path.read_bytes()
    model.fit(TEXT, window=8, batch_size=4, steps=2, progress=False)  # new weights to save
    if failure == "savez-oserror":
        monkeypatch.setattr(np, "savez", failing_savez(OSError("disk full")))
        expected = OSError
    elif failure == "savez-keyboardinterrupt":
        monkeypatch.setattr(np, "savez", failing_savez(KeyboardInterrupt()))
        expected = KeyboardInterrupt
    else:
        def failing_replace(source, destination):
            raise OSError("rename failed")
        monkeypatch.setattr(os, "replace", failing_replace)
        expected = OSError
    with pytest.raises(expected):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == previous
    assert folder_listing(tmp_path) == ["model.npz"]  # no stray temporary file
    fastrnn.load(path)  # still a good checkpoint


def test_a_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", failing_savez(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        text_model().save(tmp_path / "model.npz")
    assert folder_listing(tmp_path) == []


def test_saving_into_a_missing_folder_raises_and_leaves_nothing(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match="no.*such"):
        text_model().save(missing / "model.npz")
    assert folder_listing(tmp_path) == []


def test_save_overwrites_a_checkpoint_with_the_new_state(tmp_path):
    path = tmp_path / "model.npz"
    model = text_model()
    model.save(path)
    model.fit(TEXT, window=8, batch_size=4, steps=2, progress=False)
    model.save(path)
    np.testing.assert_array_equal(flat_params(fastrnn.load(path)), flat_params(model))
    assert folder_listing(tmp_path) == ["model.npz"]


# ------------------------------------------------------------------- bad files

@pytest.fixture
def checkpoint(tmp_path):
    """A small saved model: (path, its bytes)."""
    model = fastrnn.SequenceModel.from_text("hi there", cell="gru", hidden_size=2, seed=0,
                                            optimizer=fastrnn.optim.SGD(lr=0.1))
    path = tmp_path / "model.npz"
    model.save(path)
    return path, path.read_bytes()


def test_loading_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        fastrnn.load(tmp_path / "nothing.npz")
    with pytest.raises(FileNotFoundError):
        fastrnn.load(tmp_path)  # a folder is not a checkpoint file


@pytest.mark.parametrize("keep", [0, 1, 30, 0.5, -22, -1])
def test_loading_a_truncated_file_raises_checkpoint_error(checkpoint, tmp_path, keep):
    path, raw = checkpoint
    size = int(len(raw) * keep) if isinstance(keep, float) else keep
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(raw[:size])
    with pytest.raises(CheckpointError):
        fastrnn.load(truncated)


def zip_structure_offsets(raw):
    """Byte offsets of the zip headers' fixed fields and names: local file headers and
    central directory entries of the first and last members, and the end record."""
    offsets = set()
    locals_ = [k for k in range(len(raw)) if raw.startswith(b"PK\x03\x04", k)]
    centrals = [k for k in range(len(raw)) if raw.startswith(b"PK\x01\x02", k)]
    end = raw.rfind(b"PK\x05\x06")
    for start in (locals_[0], locals_[-1]):
        name_length = int.from_bytes(raw[start + 26:start + 28], "little")
        offsets.update(range(start, start + 30 + name_length))
    for start in (centrals[0], centrals[-1]):
        name_length = int.from_bytes(raw[start + 28:start + 30], "little")
        offsets.update(range(start, start + 46 + name_length))
    offsets.update(range(end, end + 22))
    return offsets


def test_one_flipped_byte_is_an_error_or_changes_nothing(checkpoint, tmp_path):
    """Every byte of the zip structure, and 200 others: a flip gives CheckpointError, or
    (a byte that holds no data, such as a timestamp) exactly the original content."""
    path, raw = checkpoint
    arrays, meta = load_checkpoint(path)
    rng = np.random.default_rng(0)
    positions = zip_structure_offsets(raw) | set(rng.choice(len(raw), 200, replace=False).tolist())
    damaged = tmp_path / "damaged.npz"
    rejected = 0
    for position in sorted(positions):
        flipped = bytearray(raw)
        flipped[position] ^= 0xFF
        damaged.write_bytes(bytes(flipped))
        try:
            got_arrays, got_meta = load_checkpoint(damaged)
        except CheckpointError:
            rejected += 1
            continue
        assert got_meta == meta, position
        assert got_arrays.keys() == arrays.keys(), position
        for name, value in arrays.items():
            assert got_arrays[name].dtype == value.dtype, (position, name)
            np.testing.assert_array_equal(got_arrays[name], value, err_msg=str(position))
    assert rejected > len(positions) // 2


def test_a_flipped_data_byte_fails_the_checksum(checkpoint, tmp_path):
    path, raw = checkpoint
    start = raw.index(b"\x93NUMPY", raw.index(b"param/head.weight"))
    header_length = int.from_bytes(raw[start + 8:start + 10], "little")
    flipped = bytearray(raw)
    flipped[start + 10 + header_length] ^= 0x01  # first byte of head.weight's data
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError):
        fastrnn.load(damaged)


def foreign_files(folder):
    """name -> path of files that are not fastrnn checkpoints."""
    rng = np.random.default_rng(1)
    files = {}
    files["empty"] = folder / "empty.npz"
    files["empty"].write_bytes(b"")
    files["random-bytes"] = folder / "random.npz"
    files["random-bytes"].write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    files["text"] = folder / "text.npz"
    files["text"].write_text("weights: [1, 2, 3]\n")
    files["plain-npz"] = folder / "plain.npz"
    np.savez(files["plain-npz"], weights=np.arange(4.0))
    files["npy"] = folder / "array.npz"
    with open(files["npy"], "wb") as handle:
        np.save(handle, np.arange(4.0))
    files["zip-of-text"] = folder / "texts.npz"
    with zipfile.ZipFile(files["zip-of-text"], "w") as archive:
        archive.writestr("__meta__", json.dumps({"format": "fastrnn-checkpoint"}))
        archive.writestr("__checksum__", "0" * 64)
    files["wrong-format-name"] = folder / "other.npz"
    np.savez(files["wrong-format-name"],
             __meta__=np.frombuffer(json.dumps({"format": "other"}).encode(), np.uint8),
             __checksum__=np.frombuffer(b"0" * 64, np.uint8))
    return files


@pytest.mark.parametrize("kind", ["empty", "random-bytes", "text", "plain-npz", "npy",
                                  "zip-of-text", "wrong-format-name"])
def test_loading_a_foreign_file_raises_checkpoint_error(tmp_path, kind):
    path = foreign_files(tmp_path)[kind]
    with pytest.raises(CheckpointError, match="not a fastrnn checkpoint"):
        fastrnn.load(path)


def test_a_future_format_version_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "future.npz"
    monkeypatch.setattr(fastrnn.io, "FORMAT_VERSION", fastrnn.io.FORMAT_VERSION + 1)
    text_model().save(path)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=f"version {fastrnn.io.FORMAT_VERSION + 1}"):
        fastrnn.load(path)


UNPICKLED = []


def record_unpickling(tag):
    """Runs only if something unpickles the object below."""
    UNPICKLED.append(tag)
    return tag


class Trap:
    def __reduce__(self):
        return record_unpickling, ("unpickled",)


@pytest.mark.parametrize("layout", ["object-array-in-npz", "pickle-file"])
def test_loading_never_unpickles(tmp_path, layout):
    path = tmp_path / "trap.npz"
    if layout == "object-array-in-npz":
        meta = json.dumps({"format": "fastrnn-checkpoint", "format_version": 1}).encode()
        np.savez(path, trap=np.array([Trap()], dtype=object),
                 __meta__=np.frombuffer(meta, np.uint8),
                 __checksum__=np.frombuffer(b"0" * 64, np.uint8))
    else:
        import pickle

        path.write_bytes(pickle.dumps(Trap()))
    UNPICKLED.clear()
    with pytest.raises(CheckpointError):
        fastrnn.load(path)
    assert UNPICKLED == []


# ------------------------------------------------------------ load_state_dict

def bad_state_dicts(model):
    good = model.state_dict()
    cases = {}
    cases["missing-rnn-key"] = {k: v for k, v in good.items() if k != "rnn.bias_hh_l1"}
    cases["missing-head-key"] = {k: v for k, v in good.items() if k != "head.bias"}
    cases["extra-key"] = dict(good, **{"rnn.weight_ih_l2": good["rnn.weight_ih_l1"]})
    cases["wrong-rnn-shape"] = dict(good, **{"rnn.weight_hh_l1": good["rnn.weight_hh_l1"][:, :-1]})
    cases["wrong-head-shape"] = dict(good, **{"head.weight": good["head.weight"].T})
    cases["last-value-not-numbers"] = dict(good, **{
        "rnn.bias_hh_l1": good["rnn.bias_hh_l1"].astype(str)})
    # every other value is changed, so a partial write would show
    return {name: {k: (v + 1.0 if v.dtype.kind == "f" else v) for k, v in case.items()}
            for name, case in cases.items()}


@pytest.mark.parametrize("case", ["missing-rnn-key", "missing-head-key", "extra-key",
                                  "wrong-rnn-shape", "wrong-head-shape",
                                  "last-value-not-numbers"])
def test_a_failed_load_state_dict_leaves_the_model_unchanged(case):
    model = text_model()
    before = model.state_dict()
    with pytest.raises((KeyError, ValueError, TypeError)):
        model.load_state_dict(bad_state_dicts(model)[case])
    after = model.state_dict()
    assert list(after) == list(before)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_to_bytes_and_from_bytes_round_trip_and_check_the_bytes():
    """to_bytes is the checkpoint save writes; from_bytes checks it as load does."""
    model = fastrnn.SequenceModel(cell="gru", input_size=3, hidden_size=4, output_size=2,
                                  seed=0, optimizer=fastrnn.optim.Adam())
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    model.train_step(x, np.zeros((5, 2), dtype=np.int64))
    data = model.to_bytes()
    restored = fastrnn.SequenceModel.from_bytes(data)
    np.testing.assert_array_equal(restored.flat_params, model.flat_params)
    np.testing.assert_array_equal(restored.predict(x), model.predict(x))
    assert restored.optimizer.state_dict()["step"] == model.optimizer.state_dict()["step"]
    corrupted = bytearray(data)
    corrupted[len(corrupted) // 2] ^= 0xFF
    with pytest.raises(CheckpointError):
        fastrnn.SequenceModel.from_bytes(bytes(corrupted))
