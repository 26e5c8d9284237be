"""Fused in-place optimizer updates over flat 1-D parameter/gradient arrays.

Each kernel makes one pass over the arrays and reproduces torch.optim's single-tensor
(for-loop) implementation operation by operation, in the same order: coefficient
scalars are computed in float64 as torch does on the Python side, then cast to the
array's dtype, so float32 arrays are updated in float32 as a float32 torch tensor is.

`step` is the 1-based count of the update being made (torch increments its step
before using it). Buffers that a configuration does not use may be empty arrays.

Element-wise divisions are written np.divide(a, b): numba's `a / b` checks for a zero
divisor to raise ZeroDivisionError, and that branch stops the loop from vectorising
(measured 8x slower on float32).
"""

import numpy as np

from ._jit import kernel


@kernel
def _lerp(start, end, weight, one):
    # torch's lerp: two formulas, picked by |weight| < 0.5, to stay exact at both ends.
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (one - weight)


@kernel
def sgd_update(params, grads, momentum_buffer, step, lr, momentum, dampening, nesterov,
               weight_decay):
    """torch.optim.SGD. momentum_buffer is used (and set on step 1) when momentum != 0."""
    cast = params.dtype.type
    neg_lr = cast(-lr)
    beta = cast(momentum)
    keep = cast(1.0 - dampening)
    decay = cast(weight_decay)
    use_decay = weight_decay != 0.0
    use_momentum = momentum != 0.0
    first_step = step == 1
    for i in range(params.size):
        grad = grads[i]
        if use_decay:
            grad = grad + decay * params[i]
        if use_momentum:
            if first_step:
                buf = grad  # torch starts the buffer at the first gradient, undampened
            else:
                buf = momentum_buffer[i] * beta + keep * grad
            momentum_buffer[i] = buf
            if nesterov:
                grad = grad + beta * buf
            else:
                grad = buf
        params[i] = params[i] + neg_lr * grad


@kernel
def adam_update(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2,
                eps, weight_decay, decoupled, amsgrad):
    """torch.optim.Adam (decoupled=False, L2 added to the gradient) and AdamW
    (decoupled=True, parameters shrunk by 1 - lr*weight_decay first).
    max_exp_avg_sq is used when amsgrad."""
    cast = params.dtype.type
    one = cast(1.0)
    count = float(step)  # torch raises a Python float to a float step
    bias_correction1 = 1.0 - beta1 ** count
    bias_correction2 = 1.0 - beta2 ** count
    neg_step_size = cast(-(lr / bias_correction1))
    bias_correction2_sqrt = cast(bias_correction2 ** 0.5)
    weight1 = cast(1.0 - beta1)
    beta2_ = cast(beta2)
    weight2 = cast(1.0 - beta2)
    eps_ = cast(eps)
    decay = cast(weight_decay)
    shrink = cast(1.0 - lr * weight_decay)
    use_l2 = weight_decay != 0.0 and not decoupled
    use_shrink = weight_decay != 0.0 and decoupled
    for i in range(params.size):
        grad = grads[i]
        param = params[i]
        if use_shrink:
            param = param * shrink
        if use_l2:
            grad = grad + decay * param
        m = _lerp(exp_avg[i], grad, weight1, one)
        v = exp_avg_sq[i] * beta2_ + weight2 * grad * grad
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if amsgrad:
            v = max(max_exp_avg_sq[i], v)
            max_exp_avg_sq[i] = v
        denom = np.divide(np.sqrt(v), bias_correction2_sqrt) + eps_
        params[i] = param + np.divide(neg_step_size * m, denom)


@kernel
def adagrad_update(params, grads, state_sum, step, lr, lr_decay, weight_decay, eps):
    """torch.optim.Adagrad; state_sum starts at initial_accumulator_value."""
    cast = params.dtype.type
    neg_clr = cast(-(lr / (1.0 + (float(step) - 1.0) * lr_decay)))
    eps_ = cast(eps)
    decay = cast(weight_decay)
    use_decay = weight_decay != 0.0
    for i in range(params.size):
        grad = grads[i]
        if use_decay:
            grad = grad + decay * params[i]
        total = state_sum[i] + grad * grad
        state_sum[i] = total
        params[i] = params[i] + np.divide(neg_clr * grad, np.sqrt(total) + eps_)


@kernel
def rmsprop_update(params, grads, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                   weight_decay, momentum, centered):
    """torch.optim.RMSprop. grad_avg is used when centered, momentum_buffer when
    momentum > 0; both start at zero."""
    cast = params.dtype.type
    one = cast(1.0)
    neg_lr = cast(-lr)
    alpha_ = cast(alpha)
    weight = cast(1.0 - alpha)
    eps_ = cast(eps)
    decay = cast(weight_decay)
    beta = cast(momentum)
    use_decay = weight_decay != 0.0
    use_momentum = momentum > 0.0
    for i in range(params.size):
        grad = grads[i]
        if use_decay:
            grad = grad + decay * params[i]
        sq = square_avg[i] * alpha_ + weight * grad * grad
        square_avg[i] = sq
        if centered:
            mean = _lerp(grad_avg[i], grad, weight, one)
            grad_avg[i] = mean
            avg = np.sqrt(sq - mean * mean) + eps_
        else:
            avg = np.sqrt(sq) + eps_
        if use_momentum:
            buf = momentum_buffer[i] * beta + np.divide(grad, avg)
            momentum_buffer[i] = buf
            params[i] = params[i] + neg_lr * buf
        else:
            params[i] = params[i] + np.divide(neg_lr * grad, avg)
