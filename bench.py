"""
Benchmarks, measured side by side in one run on one machine (read the ratios):
  1. optimizer step on the model's hidden matrices: our Muon (one batched Newton-Schulz call per
     shape) vs torch.optim.Muon (one call per matrix), same hyperparameters;
  2. a full training step (forward, backward, clip, step) for AdamW and Muon, each without and with
     all learnable multipliers (their overhead should be near zero: O(d_in*d_out) per matrix).

    # train.py's flags apply; its defaults are nanoGPT's shakespeare_char GPU size (6 x 384)
    python bench.py
    # nanoGPT's CPU-recipe size
    python bench.py --device cpu --n_layer 4 --n_head 4 --n_embd 128 --block_size 64 --batch_size 12
    # GPT-2 small
    python bench.py --n_layer 12 --n_head 12 --n_embd 768 --block_size 1024 --batch_size 16
"""
import statistics
import sys
import time
from dataclasses import dataclass, replace

import torch

import train
from muon import MuonAdamW
from runtime import doc, parse_flags, pick_device


@dataclass
class BenchSettings(train.Settings):
    repeats: int = doc(20, 'timed repetitions of each measurement (the median is reported)')
    warmup: int = doc(5, 'untimed repetitions first (torch.compile, caches)')


def median_ms(fn, s, device):
    """Median wall time of fn() in milliseconds, after s.warmup untimed calls."""
    times = []
    for i in range(s.warmup + s.repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        if i >= s.warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_muon_step(s, device, vocab_size):
    """Optimizer step time of ours vs torch.optim.Muon on the same hidden matrices and gradients."""
    model, _, _ = train.build(s, vocab_size, device)
    matrices = model.params_by_kind()['matrices']
    for p in matrices:
        p.grad = torch.randn_like(p)
    hyper = dict(lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True, ns_steps=s.ns_steps)
    ours = MuonAdamW([dict(params=matrices, use_muon=True, muon_scale='original', **hyper)])
    reference = torch.optim.Muon(matrices, adjust_lr_fn='original', **hyper)
    shapes = sorted({tuple(p.shape) for p in matrices})
    print(f'{len(matrices)} hidden matrices of {len(shapes)} shapes: {shapes}')
    return median_ms(ours.step, s, device), median_ms(reference.step, s, device)


def bench_train_step(s, device, autocast, vocab_size):
    """Training-step time of train.py's train_step for one optimizer and multiplier setting."""
    torch.manual_seed(s.seed)
    model, groups, optimizer = train.build(s, vocab_size, device)
    use_compile = device.type == 'cuda' if s.compile is None else s.compile
    step_model = torch.compile(model) if use_compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    x = torch.randint(0, vocab_size, (s.batch_size, s.block_size), device=device)
    def step():
        return train.train_step(step_model, optimizer, scaler, groups, s, lambda: (x, x), autocast)
    return median_ms(step, s, device)


def main(argv):
    s = BenchSettings(**parse_flags(argv, BenchSettings))
    train.check(s)
    device, dtype, autocast = pick_device(s.device, s.dtype)
    vocab_size = s.vocab_size or 65
    name = (torch.cuda.get_device_name(device) if device.type == 'cuda'
            else f'CPU, {torch.get_num_threads()} threads')
    print(f'device {name}, {dtype}, torch {torch.__version__}; model {s.n_layer} layers, '
          f'width {s.n_embd}, vocab {vocab_size}, batch {s.batch_size} x {s.block_size} tokens')
    ours, reference = bench_muon_step(s, device, vocab_size)
    print('| optimizer step (hidden matrices) | ms |\n|---|---|\n'
          f'| nanoLRM Muon (batched) | {ours:.2f} |\n'
          f'| torch.optim.Muon | {reference:.2f} |\n'
          f'| ratio torch / ours | {reference / ours:.2f}x |\n')
    rows = {}
    for optimizer in ('adamw', 'muon'):
        for mults in (False, True):
            # both columns set every multiplier flag, whatever the command line said
            kinds = dict(scalar_mult=mults, row_mult=mults, col_mult=mults)
            variant = replace(s, optimizer=optimizer, **kinds)
            rows[optimizer, mults] = bench_train_step(variant, device, autocast, vocab_size)
    print('| training step | no multipliers (ms) | scalar+row+col (ms) | multiplier overhead |\n'
          '|---|---|---|---|')
    for optimizer in ('adamw', 'muon'):
        plain, lrm = rows[optimizer, False], rows[optimizer, True]
        print(f'| {optimizer} | {plain:.1f} | {lrm:.1f} | {lrm / plain - 1:+.1%} |')
    print(f"| Muon / AdamW step time | {rows['muon', False] / rows['adamw', False]:.2f}x "
          f"| {rows['muon', True] / rows['adamw', True]:.2f}x | |")


if __name__ == '__main__':
    main(sys.argv[1:])
