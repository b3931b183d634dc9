"""Gradient clipping by norm for the module's fast path (`steps_per_call` > 1) on a CPU.

`torch.nn.utils.clip_grad_norm_` multiplies every gradient by min(1, max_norm / (norm + 1e-6)), also
when that factor is exactly 1.0: the norm is within the bound, as it is on most steps once training
settles. On a CPU that multiply is one more multi-threaded kernel per parameter tensor, whose thread
wake-ups cost more than the arithmetic. Multiplying by 1.0 changes no bit, so here it is skipped; the
norm and, when clipping, the multiply are PyTorch's own functions, so the gradients are bit for bit
those of clip_grad_norm_. On the benchmark MLP's gradients (`python scripts/bench_clipping.py`, 2-core
CPU, 2 threads, load average 7.6-9, 2026-12-05) a call within the bound took a median 44 us against
clip_grad_norm_'s 83 us, about 4% of one AdamW step at batch 64 (0.99-1.08 ms); beyond the bound,
where both multiply, 89-93 us against 81-85 us. Deciding needs the factor on the host: free on a CPU,
a synchronization per step on a GPU, where the module keeps Lightning's clipping (PyTorch's function).
"""

from __future__ import annotations

from torch import Tensor, nn


def clip_grad_norm_on_cpu(parameters: list[nn.Parameter], max_norm: float) -> Tensor:
    """`clip_grad_norm_(parameters, max_norm)` without the multiply by exactly 1.0; returns the total norm."""
    if not hasattr(nn.utils, "get_total_norm"):  # torch < 2.6 has not split clip_grad_norm_ in two
        return nn.utils.clip_grad_norm_(parameters, max_norm)
    grads = [p.grad for p in parameters if p.grad is not None]
    total = nn.utils.get_total_norm(grads)
    factor = max_norm / (total + 1e-6)  # clip_grad_norm_'s, before its clamp to 1.0
    if not bool(factor >= 1.0):  # a NaN factor (a non-finite norm) multiplies too, as in clip_grad_norm_
        nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total
