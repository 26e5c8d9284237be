"""Checkpoint files: portable .npz archives, written atomically, never pickled.

A checkpoint holds named arrays plus a JSON metadata record, a format version and
a SHA-256 checksum over everything, so a truncated, corrupted or foreign file is
a clear error rather than a wrong model.
"""

import hashlib
import io
import json
import os
import struct
import tempfile
import zipfile

import numpy as np

FORMAT = "fastrnn-checkpoint"
FORMAT_VERSION = 1
_META_KEY = "__meta__"
_CHECKSUM_KEY = "__checksum__"


class CheckpointError(ValueError):
    """A file that is not a readable fastrnn checkpoint."""


def _checksum(arrays, meta_bytes):
    digest = hashlib.sha256(meta_bytes)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(name.encode())
        digest.update(str(array.dtype).encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_checkpoint(path, arrays, meta):
    """Write `arrays` (name -> ndarray) and `meta` (JSON-able dict) to `path` atomically.

    The data goes to a temporary file in the same folder, is flushed and fsynced,
    then renamed over `path`: a crash mid-save leaves any previous file intact.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path: folder {folder!r} does not exist")
    for name in arrays:
        if name.startswith("__"):
            raise ValueError(f"array names must not start with '__', got {name!r}")
    record = dict(meta, format=FORMAT, format_version=FORMAT_VERSION)
    meta_bytes = json.dumps(record, sort_keys=True).encode()
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    payload[_META_KEY] = np.frombuffer(meta_bytes, dtype=np.uint8)
    payload[_CHECKSUM_KEY] = np.frombuffer(_checksum(arrays, meta_bytes).encode(), dtype=np.uint8)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".fastrnn", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load_checkpoint(path):
    """Read a checkpoint written by `save_checkpoint`; returns (arrays, meta).

    Never unpickles: object arrays are refused. Raises FileNotFoundError for a
    missing file and CheckpointError for anything that is not an intact checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no checkpoint file at {path!r}")
    with open(path, "rb") as file:
        raw = file.read()
    try:
        loaded = np.load(io.BytesIO(raw), allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as archive:
                arrays = {name: archive[name] for name in archive.files}
    # A damaged zip raises more than BadZipFile: a flipped byte in a header can give
    # NotImplementedError (compression method, zip version), RuntimeError ("encrypted")
    # or struct.error.
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError,
            KeyError, NotImplementedError, RuntimeError, struct.error) as error:
        raise CheckpointError(f"{path!r} is not a fastrnn checkpoint (unreadable archive: "
                              f"{type(error).__name__}: {error})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
        raise CheckpointError(f"{path!r} is not a fastrnn checkpoint (a single .npy array, "
                              "not an .npz archive)")
    foreign = sorted(name for name, value in arrays.items() if not isinstance(value, np.ndarray))
    if foreign:
        raise CheckpointError(f"{path!r} is not a fastrnn checkpoint (members {foreign} are "
                              "not .npy arrays)")
    if _META_KEY not in arrays or _CHECKSUM_KEY not in arrays:
        raise CheckpointError(f"{path!r} is not a fastrnn checkpoint (no metadata record)")
    meta_bytes = arrays.pop(_META_KEY).tobytes()
    stored = arrays.pop(_CHECKSUM_KEY).tobytes().decode("ascii", "replace")
    try:
        meta = json.loads(meta_bytes)
    except ValueError:
        raise CheckpointError(f"{path!r}: metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a fastrnn checkpoint (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path!r} has checkpoint format version "
                              f"{meta.get('format_version')!r}; this fastrnn reads "
                              f"version {FORMAT_VERSION}")
    if _checksum(arrays, meta_bytes) != stored:
        raise CheckpointError(f"{path!r} is corrupted (checksum mismatch)")
    return arrays, meta
