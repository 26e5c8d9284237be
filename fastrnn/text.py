"""Text for character models: the vocabulary (characters <-> ids) and sampling text
from a trained SequenceModel."""

import numpy as np

from ._validate import int_array, int_in_range, positive_float, positive_int

UNKNOWN = "\ufffd"  # decoded form of the reserved unknown-character id 0


class Vocabulary:
    """The characters of a character model: id k + 1 stands for `chars[k]`, and id 0
    for any character outside them (it decodes to UNKNOWN), so encoding never fails.
    """

    def __init__(self, chars):
        chars = tuple(chars)
        if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars) \
                or len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct single characters, at least one")
        self.chars = chars
        self._ids = {c: k + 1 for k, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text):
        """The sorted distinct characters of `text` (a non-empty str)."""
        if not isinstance(text, str) or not text:
            raise ValueError("text must be a non-empty str")
        return cls(sorted(set(text)))

    @property
    def size(self):
        """The number of ids, the unknown-character id included: len(chars) + 1."""
        return len(self.chars) + 1

    def encode(self, text):
        """Character ids (int64); characters outside the vocabulary map to id 0."""
        ids = self._ids
        return np.fromiter((ids.get(c, 0) for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids):
        """The characters of integer `ids`, each in [0, len(chars)]; 0 gives UNKNOWN."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        int_array(ids, "ids", "character ids", 0, len(self.chars),
                  f"{len(self.chars)} characters, 0 for unknown")
        table = (UNKNOWN,) + self.chars
        return "".join(table[int(k)] for k in ids.reshape(-1))


def vocabulary_of(model):
    """A SequenceModel's Vocabulary; a clear error for a model without one."""
    if model.vocabulary is None:
        raise ValueError("this model has no character vocabulary: build it with "
                         "SequenceModel.from_text")
    return model.vocabulary


def generate(model, prime="", n=200, temperature=0.8, top_k=None, seed=0):
    """Sample `n` characters after `prime` from a character model (one built with
    SequenceModel.from_text), one step at a time, carrying the state.

    Each character is drawn from softmax(logits / temperature), among the `top_k`
    likeliest when given, never the unknown-character id; `seed` makes it
    reproducible.
    """
    vocabulary = vocabulary_of(model)
    n = int_in_range(n, "n", 0)
    temperature = positive_float(temperature, "temperature")
    if top_k is not None:
        top_k = positive_int(top_k, "top_k")
    rng = np.random.default_rng(seed)
    ids = vocabulary.encode(prime) if prime else np.zeros(1, dtype=np.int64)
    logits, state = model.predict(ids[:, None], return_state=True)
    out = []
    for _ in range(n):
        token = _sample(logits[-1, 0], temperature, top_k, rng)
        out.append(token)
        logits, state = model.predict(np.array([[token]]), state=state, return_state=True)
    return vocabulary.decode(np.array(out, dtype=np.int64))


def _sample(logits, temperature, top_k, rng):
    scores = logits.astype(np.float64) / temperature
    scores[0] = -np.inf  # never emit the unknown-character id
    if top_k is not None and top_k < scores.size - 1:
        cutoff = np.partition(scores, -top_k)[-top_k]
        scores[scores < cutoff] = -np.inf
    scores -= scores.max()
    probabilities = np.exp(scores)
    probabilities /= probabilities.sum()
    return int(rng.choice(scores.size, p=probabilities))
