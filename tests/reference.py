"""Slow, obvious float64 reference for fastrnn's forward pass and BPTT.

Everything here is plain numpy with an explicit loop over time, written to be read
and checked by eye rather than to be fast. It is validated against torch in
tests/test_reference.py, and the fast Numba kernels are then tested against it, so
torch is only needed to trust the reference, not to test the package.

Semantics follow torch exactly:

* Elman: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh or relu.
* LSTM, gate order i, f, g, o:  c' = f*c + i*g,  h' = o*tanh(c').
* GRU, gate order r, z, n:      n = tanh(W_in x + b_in + r*(W_hn h + b_hn)),
                                h' = (1-z)*n + z*h.
* GRU reset before (Cho et al. 2014; Keras reset_after=False; ONNX's default
  linear_before_reset=0), the same but n = tanh(W_in x + b_in + W_hn (r*h) + b_hn).
  torch has no such cell: tests/test_onnx_reference.py checks it against ONNX's
  reference evaluator instead.
* lengths: step t of sequence b is valid iff t < lengths[b]. Invalid steps output zero
  and leave the state untouched, in both directions; the reverse direction therefore
  starts each sequence at its own last valid step. This is what torch gives with
  pack_padded_sequence(..., enforce_sorted=False) + pad_packed_sequence.
* clip_hidden: at every valid step the total gradient reaching h_t (d_out[t] plus what
  flows back from the next step in processing order; at the first processed step that
  is d_out + d_hn) is clipped element-wise to [-clip_hidden, clip_hidden] before use.
  Padded steps do not clip: they only pass the gradient through unchanged, exactly as
  if each sequence had been run alone with its own length.
"""

from __future__ import annotations

import numpy as np

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before")
TORCH_CELLS = CELLS[:4]  # the cells torch has

# "rnn" is the public SequenceModel spelling of the tanh Elman cell.
_CELL_ALIASES = {"rnn": "rnn_tanh"}


def canonical_cell(cell: str) -> str:
    """Return the canonical cell name ("rnn" -> "rnn_tanh"); reject unknown cells."""
    name = _CELL_ALIASES.get(cell, cell)
    if name not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {CELLS + ('rnn',)}")
    return name


def gate_count(cell: str) -> int:
    """Number of stacked gate blocks in weight_ih / weight_hh (rows = gate_count * H)."""
    return {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3,
            "gru_reset_before": 3}[canonical_cell(cell)]


def param_name(kind: str, layer: int, reverse: bool) -> str:
    """torch's parameter name, e.g. param_name("weight_ih", 1, True) -> weight_ih_l1_reverse."""
    return f"{kind}_l{layer}" + ("_reverse" if reverse else "")


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _valid_mask(lengths, T: int, B: int) -> np.ndarray:
    """(T, B) bool: True where step t of sequence b is inside its length."""
    if lengths is None:
        return np.ones((T, B), dtype=bool)
    lengths = np.asarray(lengths)
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},), got {lengths.shape}")
    if np.any(lengths < 1) or np.any(lengths > T):
        raise ValueError(f"lengths must lie in [1, {T}], got {lengths}")
    return np.arange(T)[:, None] < lengths[None, :]


# ---------------------------------------------------------------------------
# One direction of one layer
# ---------------------------------------------------------------------------


def forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0=None, lengths=None, reverse=False):
    """Run one direction of one layer.

    x: (T, B, I); w_ih: (G*H, I); w_hh: (G*H, H); b_ih, b_hh: (G*H,) or None (no bias);
    h0: (B, H) or None (zeros); c0: (B, H) or None (zeros), used only by LSTM;
    lengths: (B,) ints or None.
    Returns (out (T, B, H), h_n (B, H), c_n (B, H) or None, cache for backward).
    """
    cell = canonical_cell(cell)
    x = np.asarray(x, dtype=np.float64)
    w_ih = np.asarray(w_ih, dtype=np.float64)
    w_hh = np.asarray(w_hh, dtype=np.float64)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    has_bias = b_ih is not None
    b_ih = np.zeros(w_ih.shape[0]) if b_ih is None else np.asarray(b_ih, dtype=np.float64)
    b_hh = np.zeros(w_hh.shape[0]) if b_hh is None else np.asarray(b_hh, dtype=np.float64)
    h = np.zeros((B, H)) if h0 is None else np.array(h0, dtype=np.float64).reshape(B, H)
    is_lstm = cell == "lstm"
    c = None
    if is_lstm:
        c = np.zeros((B, H)) if c0 is None else np.array(c0, dtype=np.float64).reshape(B, H)
    valid = _valid_mask(lengths, T, B)

    out = np.zeros((T, B, H))
    steps = []  # per processed step: what backward needs, in processing order
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        keep = valid[t][:, None]
        x_t = x[t]
        step = {"t": t, "h_prev": h.copy()}
        if cell in ("rnn_tanh", "rnn_relu"):
            pre = x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh
            h_new = np.tanh(pre) if cell == "rnn_tanh" else np.maximum(pre, 0.0)
            step["h_new"] = h_new
        elif is_lstm:
            gates = x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh
            i = _sigmoid(gates[:, 0 * H:1 * H])
            f = _sigmoid(gates[:, 1 * H:2 * H])
            g = np.tanh(gates[:, 2 * H:3 * H])
            o = _sigmoid(gates[:, 3 * H:4 * H])
            c_new = f * c + i * g
            tanh_c = np.tanh(c_new)
            h_new = o * tanh_c
            step.update(c_prev=c.copy(), i=i, f=f, g=g, o=o, tanh_c=tanh_c)
            c = np.where(keep, c_new, c)
        elif cell == "gru":
            gi = x_t @ w_ih.T + b_ih
            gh = h @ w_hh.T + b_hh
            r = _sigmoid(gi[:, 0 * H:1 * H] + gh[:, 0 * H:1 * H])
            z = _sigmoid(gi[:, 1 * H:2 * H] + gh[:, 1 * H:2 * H])
            hn = gh[:, 2 * H:3 * H]  # W_hn h + b_hn, needed for dr in backward
            n = np.tanh(gi[:, 2 * H:3 * H] + r * hn)
            h_new = (1.0 - z) * n + z * h
            step.update(r=r, z=z, n=n, hn=hn)
        else:  # gru_reset_before
            gi = x_t @ w_ih.T + b_ih
            r = _sigmoid(gi[:, 0 * H:1 * H] + h @ w_hh[0 * H:1 * H].T + b_hh[0 * H:1 * H])
            z = _sigmoid(gi[:, 1 * H:2 * H] + h @ w_hh[1 * H:2 * H].T + b_hh[1 * H:2 * H])
            rh = r * h
            n = np.tanh(gi[:, 2 * H:3 * H] + rh @ w_hh[2 * H:3 * H].T + b_hh[2 * H:3 * H])
            h_new = (1.0 - z) * n + z * h
            step.update(r=r, z=z, n=n, rh=rh)
        h = np.where(keep, h_new, h)
        out[t] = np.where(keep, h_new, 0.0)
        steps.append(step)

    cache = {
        "cell": cell, "x": x, "w_ih": w_ih, "w_hh": w_hh, "has_bias": has_bias,
        "valid": valid, "steps": steps, "H": H,
    }
    return out, h, c, cache


def backward(cell, cache, d_out, d_hn=None, d_cn=None, clip_hidden=None):
    """BPTT through one direction of one layer, given forward's cache.

    d_out: (T, B, H) (entries at padded steps are ignored, those outputs are constant
    zeros); d_hn, d_cn: (B, H) or None (zero). Returns
    (dx (T, B, I), dh0 (B, H), dc0 (B, H) or None,
     {"weight_ih", "weight_hh", "bias_ih", "bias_hh"} -> gradient; biases only if present).
    """
    cell = canonical_cell(cell)
    if cell != cache["cell"]:
        raise ValueError(f"cache was made by {cache['cell']!r}, not {cell!r}")
    x, w_ih, w_hh, valid, H = cache["x"], cache["w_ih"], cache["w_hh"], cache["valid"], cache["H"]
    B = x.shape[1]
    is_lstm = cell == "lstm"
    d_out = np.asarray(d_out, dtype=np.float64)
    dh = np.zeros((B, H)) if d_hn is None else np.array(d_hn, dtype=np.float64).reshape(B, H)
    dc = None
    if is_lstm:
        dc = np.zeros((B, H)) if d_cn is None else np.array(d_cn, dtype=np.float64).reshape(B, H)

    dx = np.zeros_like(x)
    dw_ih = np.zeros_like(w_ih)
    dw_hh = np.zeros_like(w_hh)
    db_ih = np.zeros(w_ih.shape[0])
    db_hh = np.zeros(w_hh.shape[0])

    for step in reversed(cache["steps"]):
        t = step["t"]
        keep = valid[t][:, None]
        h_prev = step["h_prev"]
        # Padded outputs are constant zeros, so their d_out never reaches the state.
        dh_total = dh + np.where(keep, d_out[t], 0.0)
        if clip_hidden is not None:
            # Only valid steps clip: a padded step hands dh on untouched (see the last
            # line of this loop), as if the sequence had ended at its own length.
            dh_total = np.where(keep, np.clip(dh_total, -clip_hidden, clip_hidden), dh_total)

        if cell in ("rnn_tanh", "rnn_relu"):
            h_new = step["h_new"]
            slope = 1.0 - h_new**2 if cell == "rnn_tanh" else (h_new > 0.0).astype(np.float64)
            d_pre = dh_total * slope
            d_gi = d_pre  # gradient w.r.t. W_ih x + b_ih
            d_gh = d_pre  # gradient w.r.t. W_hh h + b_hh
            dh_prev_direct = 0.0
        elif is_lstm:
            i, f, g, o, tanh_c = step["i"], step["f"], step["g"], step["o"], step["tanh_c"]
            d_o = dh_total * tanh_c
            dc_total = dc + dh_total * o * (1.0 - tanh_c**2)
            d_i, d_f, d_g = dc_total * g, dc_total * step["c_prev"], dc_total * i
            d_pre = np.concatenate(
                [d_i * i * (1 - i), d_f * f * (1 - f), d_g * (1 - g**2), d_o * o * (1 - o)],
                axis=1,
            )
            d_gi = d_pre
            d_gh = d_pre
            dh_prev_direct = 0.0
            # A padded step leaves c untouched, so its gradient just passes through.
            dc = np.where(keep, dc_total * f, dc)
        elif cell == "gru_reset_before":
            r, z, n = step["r"], step["z"], step["n"]
            d_n_pre = dh_total * (1.0 - z) * (1.0 - n**2)
            d_z_pre = dh_total * (h_prev - n) * z * (1.0 - z)
            d_rh = d_n_pre @ w_hh[2 * H:3 * H]  # gradient w.r.t. r * h
            d_r_pre = d_rh * h_prev * r * (1.0 - r)
            d_gi = np.concatenate([d_r_pre, d_z_pre, d_n_pre], axis=1)
            d_gh = d_gi
            dh_prev_direct = dh_total * z + d_rh * r
        else:  # gru
            r, z, n, hn = step["r"], step["z"], step["n"], step["hn"]
            d_n_pre = dh_total * (1.0 - z) * (1.0 - n**2)
            d_z_pre = dh_total * (h_prev - n) * z * (1.0 - z)
            d_r_pre = d_n_pre * hn * r * (1.0 - r)
            d_gi = np.concatenate([d_r_pre, d_z_pre, d_n_pre], axis=1)
            # r multiplies the whole (W_hn h + b_hn) term, so the n block is scaled by r.
            d_gh = np.concatenate([d_r_pre, d_z_pre, d_n_pre * r], axis=1)
            dh_prev_direct = dh_total * z

        # Padded steps contribute nothing to the parameters or to x.
        d_gi = np.where(keep, d_gi, 0.0)
        d_gh = np.where(keep, d_gh, 0.0)
        dx[t] = d_gi @ w_ih
        dw_ih += d_gi.T @ x[t]
        db_ih += d_gi.sum(axis=0)
        db_hh += d_gh.sum(axis=0)
        if cell == "gru_reset_before":
            # W_hn multiplies r * h, not h: its gradient is taken against r * h, and
            # its path back to h is in dh_prev_direct.
            dw_hh[:2 * H] += d_gh[:, :2 * H].T @ h_prev
            dw_hh[2 * H:] += d_gh[:, 2 * H:].T @ step["rh"]
            through_w_hh = d_gh[:, :2 * H] @ w_hh[:2 * H]
        else:
            dw_hh += d_gh.T @ h_prev
            through_w_hh = d_gh @ w_hh
        dh = np.where(keep, through_w_hh + dh_prev_direct, dh)

    grads = {"weight_ih": dw_ih, "weight_hh": dw_hh}
    if cache["has_bias"]:
        grads["bias_ih"] = db_ih
        grads["bias_hh"] = db_hh
    return dx, dh, dc, grads


# ---------------------------------------------------------------------------
# Full stacked, optionally bidirectional module (torch.nn.RNN / LSTM / GRU)
# ---------------------------------------------------------------------------


def _infer_hidden_size(params) -> int:
    return params["weight_hh_l0"].shape[1]


def _forward_all(cell, params, x, h0, c0, lengths, num_layers, bidirectional):
    """Forward through every layer and direction, keeping each direction's cache."""
    cell = canonical_cell(cell)
    x = np.asarray(x, dtype=np.float64)
    B = x.shape[1]
    H = _infer_hidden_size(params)
    D = 2 if bidirectional else 1
    is_lstm = cell == "lstm"
    h0 = np.zeros((num_layers * D, B, H)) if h0 is None else np.asarray(h0, dtype=np.float64)
    if is_lstm:
        c0 = np.zeros((num_layers * D, B, H)) if c0 is None else np.asarray(c0, dtype=np.float64)

    h_n = np.zeros((num_layers * D, B, H))
    c_n = np.zeros((num_layers * D, B, H)) if is_lstm else None
    caches = []
    layer_input = x
    for layer in range(num_layers):
        direction_outs = []
        for direction in range(D):
            reverse = direction == 1
            idx = layer * D + direction
            out, h, c, cache = forward(
                cell, layer_input,
                params[param_name("weight_ih", layer, reverse)],
                params[param_name("weight_hh", layer, reverse)],
                params.get(param_name("bias_ih", layer, reverse)),
                params.get(param_name("bias_hh", layer, reverse)),
                h0[idx], c0[idx] if is_lstm else None, lengths, reverse,
            )
            direction_outs.append(out)
            h_n[idx] = h
            if is_lstm:
                c_n[idx] = c
            caches.append(cache)
        layer_input = np.concatenate(direction_outs, axis=2)
    return layer_input, h_n, c_n, caches


def reference_forward(cell, params, x, h0=None, c0=None, lengths=None, num_layers=1,
                      bidirectional=False):
    """torch.nn.RNN/LSTM/GRU forward (dropout 0) on float64 numpy arrays.

    params: torch-named dict (weight_ih_l{k}[_reverse], ...; biases may be absent).
    x: (T, B, I); h0, c0: (num_layers*D, B, H) or None (zeros); c0 only for LSTM.
    Returns (out (T, B, D*H), h_n (num_layers*D, B, H), c_n like h_n or None).
    """
    out, h_n, c_n, _ = _forward_all(cell, params, x, h0, c0, lengths, num_layers, bidirectional)
    return out, h_n, c_n


def reference_backward(cell, params, x, h0=None, c0=None, lengths=None, num_layers=1,
                       bidirectional=False, d_out=None, d_hn=None, d_cn=None,
                       clip_hidden=None):
    """Gradients of sum(out*d_out) + sum(h_n*d_hn) [+ sum(c_n*d_cn)] by BPTT.

    Reruns the forward pass, then walks layers top-down. Any of d_out, d_hn, d_cn may
    be None (zero). clip_hidden applies to every layer and direction.
    Returns (dx (T, B, I), dh0 (L*D, B, H), dc0 like dh0 or None, grads) where grads
    has exactly the keys of params.
    """
    cell = canonical_cell(cell)
    out, h_n, _, caches = _forward_all(cell, params, x, h0, c0, lengths, num_layers,
                                       bidirectional)
    D = 2 if bidirectional else 1
    H = h_n.shape[2]
    is_lstm = cell == "lstm"
    d_layer_out = np.zeros_like(out) if d_out is None else np.asarray(d_out, dtype=np.float64)
    d_hn = np.zeros_like(h_n) if d_hn is None else np.asarray(d_hn, dtype=np.float64)
    if is_lstm:
        d_cn = np.zeros_like(h_n) if d_cn is None else np.asarray(d_cn, dtype=np.float64)

    dh0 = np.zeros_like(h_n)
    dc0 = np.zeros_like(h_n) if is_lstm else None
    grads = {}
    for layer in range(num_layers - 1, -1, -1):
        d_layer_in = None
        for direction in range(D):
            reverse = direction == 1
            idx = layer * D + direction
            d_dir_out = d_layer_out[:, :, direction * H:(direction + 1) * H]
            dx_dir, dh, dc, dir_grads = backward(
                cell, caches[idx], d_dir_out, d_hn[idx],
                d_cn[idx] if is_lstm else None, clip_hidden,
            )
            # Both directions read the same layer input, so their gradients add up.
            d_layer_in = dx_dir if d_layer_in is None else d_layer_in + dx_dir
            dh0[idx] = dh
            if is_lstm:
                dc0[idx] = dc
            for kind, grad in dir_grads.items():
                grads[param_name(kind, layer, reverse)] = grad
        d_layer_out = d_layer_in
    if set(grads) != set(params):
        raise ValueError(f"params keys {sorted(params)} do not match the module layout "
                         f"(expected {sorted(grads)})")
    return d_layer_out, dh0, dc0, grads


# ---------------------------------------------------------------------------
# Gradient clipping helpers (torch.nn.utils semantics)
# ---------------------------------------------------------------------------


def reference_clip_grad_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_: scale all grads in place by max_norm/(norm+1e-6)
    when that is < 1; return the pre-clip total L2 norm as a float."""
    total = float(np.sqrt(sum(float(np.sum(np.asarray(g, dtype=np.float64) ** 2))
                              for g in grads.values())))
    coefficient = max_norm / (total + 1e-6)
    if coefficient < 1.0:
        for g in grads.values():
            g *= coefficient
    return total


def reference_clip_grad_value(grads, clip_value):
    """torch.nn.utils.clip_grad_value_: clip every grad element-wise in place."""
    for g in grads.values():
        np.clip(g, -clip_value, clip_value, out=g)
