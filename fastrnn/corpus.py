"""A text corpus that exists on every machine with Python: the standard library's source."""

import os
import sysconfig

# Plain, long, well-formed modules; a fixed list keeps the corpus the same on
# every machine with the same Python version.
_MODULES = ("argparse.py", "collections/__init__.py", "textwrap.py", "string.py",
            "dataclasses.py", "functools.py", "contextlib.py", "pathlib.py", "json/encoder.py",
            "json/decoder.py", "csv.py", "fractions.py", "statistics.py", "heapq.py", "bisect.py",
            "shutil.py", "tempfile.py", "glob.py", "fnmatch.py", "random.py")


def stdlib_source(max_chars=600_000):
    """Concatenated source of a fixed list of standard-library modules (ASCII only)."""
    folder = sysconfig.get_paths()["stdlib"]
    parts, total = [], 0
    for name in _MODULES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read().encode("ascii", "ignore").decode("ascii")
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    if not parts:
        raise FileNotFoundError(f"no standard-library source found under {folder!r}")
    return "".join(parts)[:max_chars]


def read_text(path):
    """A text file's contents (UTF-8, undecodable bytes replaced); a clear error if empty."""
    with open(path, encoding="utf-8", errors="replace") as file:
        text = file.read()
    if not text:
        raise ValueError(f"--text: {path!r} is empty")
    return text
