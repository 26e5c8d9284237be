"""Very long sequences: memory grows linearly with T, and truncated BPTT is bounded."""

import tracemalloc

import numpy as np

import fastrnn


def _peak_bytes(n_steps, cell=fastrnn.LSTM, hidden=16):
    layer = cell(4, hidden, dtype=np.float32, seed=0)
    x = np.random.default_rng(0).standard_normal((n_steps, 2, 4)).astype(np.float32)
    out, _ = layer(x)  # compile (the kernels this size uses) outside the measurement
    layer.backward(np.ones_like(out))
    tracemalloc.start()
    try:
        out, _ = layer(x)
        dx, _ = layer.backward(np.ones_like(out), max_norm=1.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.isfinite(out).all() and np.isfinite(dx).all()
    return peak


def test_twenty_thousand_steps_run_with_memory_linear_in_T():
    peak_10k = _peak_bytes(10_000)
    peak_20k = _peak_bytes(20_000)
    # Linear: doubling T at most doubles the peak (plus a small constant).
    assert peak_20k <= 2.1 * peak_10k
    # Bytes per step and sequence: LSTM caches 4H gates + 3H states + output +
    # gradients, all float32; anything quadratic would blow far past this bound.
    bytes_per_step = peak_20k / (20_000 * 2)
    assert bytes_per_step < 64 * 4 * 16 * 2


def test_truncated_bptt_memory_is_bounded_by_the_window():
    text = "abcdefghij" * 4000
    model = fastrnn.SequenceModel.from_text(text, cell="gru", hidden_size=16, seed=0)
    model.fit(text[:2000], window=32, batch_size=4, steps=2, progress=False)
    peaks = []
    for length in (8_000, 32_000):
        tracemalloc.start()
        try:
            model.fit(text[:length], window=32, batch_size=4, epochs=1, progress=False)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        peaks.append(peak)
    # Four times the data, same window: the peak grows only by the data itself
    # (the string, its int64 ids and their stream layout: under 24 bytes per
    # character), never by activations kept across windows (~1 KB per step here).
    assert peaks[1] - peaks[0] <= 24 * (32_000 - 8_000) + 100_000
