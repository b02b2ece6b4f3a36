"""
Benchmarks, measured side by side in one run on one machine: every variant takes one step in turn
(A B C D A B C D ...), so a machine that slows down slows all of them alike. Read the ratios.
  1. the Muon optimizer step on the model's hidden matrices: ours (one batched Newton-Schulz call
     per shape) vs torch.optim.Muon (one call per matrix), and its share of a Muon training step;
  2. a full training step (train.py's train_step: forward, backward, clip, step) for AdamW and Muon,
     each without and with all learnable multipliers, with tokens/s, on known GPUs MFU, and on
     CUDA the peak memory of each (weights and optimizer state + the most a step allocates);
  3. with --nanogpt PATH (a karpathy/nanoGPT checkout; nanoGPT is not a dependency): nanoGPT's own
     model and training step at the same size, against ours without multipliers;
  4. with --baseline PATH (a checkout of another nanoLRM commit): its training steps, each variant
     of 2. in turn with ours, to see whether a change made a step slower.

    # train.py's flags apply; its defaults are nanoGPT's shakespeare_char GPU size (6 x 384)
    python bench.py
    # nanoGPT's CPU recipe, against nanoGPT itself
    python bench.py --device cpu --n_layer 4 --n_head 4 --n_embd 128 --block_size 64 \\
        --batch_size 12 --repeats 100 --nanogpt ../nanoGPT
    # GPT-2 small, 16 x 1024 tokens per step; add --grad_accum 32 for 0.5M tokens per step;
    # --profile adds torch.profiler's table of each step
    python bench.py --n_layer 12 --n_head 12 --n_embd 768 --block_size 1024 --batch_size 16 \\
        --vocab_size 50304
"""
import contextlib
import functools
import importlib.util
import io
import os
import statistics
import sys
from pathlib import Path
import time
from dataclasses import dataclass, fields, replace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
import guards  # noqa: E402
import train  # noqa: E402
from muon import MuonAdamW  # noqa: E402
from model import flag  # noqa: E402
from runtime import fail, parse_flags, peak_flops, pick_device  # noqa: E402


@dataclass
class BenchSettings(train.Settings):
    repeats: int = flag(20, 'timed steps of each variant, taken in turn (the median is reported)',
                        allowed='[1, inf)')
    warmup: int = flag(5, 'untimed steps of each variant first (torch.compile, caches)',
                       allowed='[0, inf)')
    nanogpt: str = flag('', 'path of a karpathy/nanoGPT checkout: also time its training step')
    baseline: str = flag('', 'path of a checkout of another nanoLRM commit: also time its '
                             'training steps, in turn with ours')
    profile: bool = flag(False, 'also print where each training step spends its time, by op '
                                '(torch.profiler, over --repeats steps)')


def median_ms_in_turn(steps, s, device):
    """{name: median ms of one call} for {name: step function}, the calls taken in turn; and on
    CUDA {name: the most memory one call allocated on top of what was allocated before it}."""
    cuda = device.type == 'cuda'
    def timed(fn):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1000
        return ms, torch.cuda.max_memory_allocated(device) - before if cuda else 0
    for fn in steps.values():
        for _ in range(s.warmup):
            fn()
    times, peaks = {name: [] for name in steps}, {name: 0 for name in steps}
    for _ in range(s.repeats):
        for name, fn in steps.items():
            ms, peak = timed(fn)
            times[name].append(ms)
            peaks[name] = max(peaks[name], peak)
    return {name: statistics.median(t) for name, t in times.items()}, peaks


def print_profiles(steps, s, device):
    """torch.profiler's table for each step function: the ops that take the most time."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == 'cuda':
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sort_by = 'self_cuda_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    for name, fn in steps.items():
        with torch.profiler.profile(activities=activities) as profiler:
            for _ in range(s.repeats):
                fn()
        print(f'\n{name}, {s.repeats} steps:')
        print(profiler.key_averages().table(sort_by=sort_by, row_limit=15))


def muon_steps(s, device, vocab_size):
    """Optimizer steps of ours and of torch.optim.Muon on the same hidden matrices and gradients."""
    model, _, _ = train.build(s, vocab_size, device)
    matrices = [p for g in train.param_groups(model, s) if g['name'] == 'matrices'
                for p in g['params']]
    for p in matrices:
        p.grad = torch.randn_like(p)
    hyper = dict(lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True, ns_steps=s.ns_steps)
    ours = MuonAdamW([dict(params=matrices, use_muon=True, muon_scale='original', **hyper)])
    shapes = sorted({tuple(p.shape) for p in matrices})
    print(f'{len(matrices)} hidden matrices of {len(shapes)} shapes: {shapes}')
    if not hasattr(torch.optim, 'Muon'):  # PyTorch < 2.9
        return {'nanoLRM Muon': ours.step}
    reference = torch.optim.Muon(matrices, adjust_lr_fn='original', **hyper)
    return {'nanoLRM Muon': ours.step, 'torch.optim.Muon': reference.step}


def make_batch(s, vocab_size, device):
    x = torch.randint(0, vocab_size, (s.batch_size, s.block_size), device=device)
    return lambda: (x, x)


def nanolrm_step(s, device, autocast, vocab_size, code=train):
    """train.py's train_step for one optimizer and multiplier setting; also its FLOPs per step
    and a function that counts the bytes it holds between steps (weights, optimizer state).
    code: the train module to time (another checkout's, from import_checkout)."""
    torch.manual_seed(s.seed)
    if code is not train:  # its own Settings, with the fields it knows
        s = code.Settings(**{f.name: getattr(s, f.name) for f in fields(code.Settings)
                             if hasattr(s, f.name)})
    model, groups, optimizer = code.build(s, vocab_size, device)
    use_compile = device.type == 'cuda' if s.compile is None else s.compile
    step_model = torch.compile(model) if use_compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    next_batch = make_batch(s, vocab_size, device)
    built_once = s.build_once and s.grad_accum > 1  # as train.py does
    build = getattr(code, 'weights_built_once', None)  # a method of GPT in older commits
    build = functools.partial(build, model) if build else model.weights_built_once
    built_once = build if built_once else None
    def step():
        micro_batches = [next_batch() for _ in range(s.grad_accum)]
        code.train_step(step_model, optimizer, scaler, groups, s, micro_batches, autocast,
                        built_once)
    def held():
        state = [t for v in optimizer.state.values() for t in v.values() if torch.is_tensor(t)]
        return sum(t.numel() * t.element_size() for t in [*model.parameters(), *state])
    return step, model.flops_per_token() * s.grad_accum * s.batch_size * s.block_size, held


def import_checkout(path):
    """train.py of another nanoLRM checkout, imported beside ours: its modules (model, muon, ...)
    are loaded from path under their own names, then ours are put back."""
    if not os.path.isfile(os.path.join(path, 'train.py')):
        fail(f'--baseline {path}: no train.py there; give the path of a nanoLRM checkout '
             '(git worktree add ../before <commit>)')
    ours = {'train', 'model', 'muon', 'runtime', 'guards', 'sample', 'data'}
    mine = lambda: [n for n in sys.modules if n.split('.')[0] in ours]  # noqa: E731
    saved = {n: sys.modules.pop(n) for n in mine()}
    sys.path.insert(0, os.path.abspath(path))
    try:
        return importlib.import_module('train')
    finally:
        sys.path.remove(os.path.abspath(path))
        for n in mine():
            del sys.modules[n]
        sys.modules.update(saved)


def nanogpt_step(s, device, autocast, vocab_size):
    """nanoGPT's model and the inner loop of its train.py (AdamW, clip, zero_grad) at our size."""
    path = os.path.join(s.nanogpt, 'model.py')
    if not os.path.isfile(path):
        fail(f'--nanogpt {s.nanogpt}: no model.py there; give the path of a karpathy/nanoGPT '
             'checkout (git clone https://github.com/karpathy/nanoGPT)')
    spec = importlib.util.spec_from_file_location('nanogpt_model', path)
    nanogpt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nanogpt)
    torch.manual_seed(s.seed)
    config = nanogpt.GPTConfig(block_size=s.block_size, vocab_size=vocab_size, n_layer=s.n_layer,
                               n_head=s.n_head, n_embd=s.n_embd, dropout=s.dropout, bias=False)
    model = nanogpt.GPT(config).to(device)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter counts
        optimizer = model.configure_optimizers(s.weight_decay, s.learning_rate,
                                               (s.beta1, s.beta2), device.type)
    use_compile = device.type == 'cuda' if s.compile is None else s.compile
    step_model = torch.compile(model) if use_compile else model
    next_batch = make_batch(s, vocab_size, device)
    def step():
        for _ in range(s.grad_accum):
            x, y = next_batch()
            with autocast:
                _, loss = step_model(x, y)
            (loss / s.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main(argv):
    s = BenchSettings(**parse_flags(argv, BenchSettings))
    guards.check(s)
    device, dtype, autocast = pick_device(s.device, s.dtype)
    vocab_size = s.vocab_size or 65
    name = (torch.cuda.get_device_name(device) if device.type == 'cuda'
            else f'CPU, {torch.get_num_threads()} threads')
    tokens = s.grad_accum * s.batch_size * s.block_size
    print(f'device {name}, {dtype}, torch {torch.__version__}; model {s.n_layer} layers, '
          f'width {s.n_embd}, vocab {vocab_size}; {s.grad_accum} x {s.batch_size} x '
          f'{s.block_size} = {tokens:,} tokens per step')

    steps, flops, held = {}, {}, {}
    columns = {'none': dict(scalar_mult=False, row_mult=False, col_mult=False),
               's+r+c': dict(scalar_mult=True, row_mult=True, col_mult=True)}
    if s.grad_accum > 1:  # W built once per step (the default), or once per micro-batch
        columns['s+r+c'].update(build_once=True)
        columns['s+r+c per micro-batch'] = dict(columns['s+r+c'], build_once=False)
    for optimizer in ('adamw', 'muon'):
        for column, flags in columns.items():  # every multiplier flag set, whatever argv said
            variant = replace(s, optimizer=optimizer, **flags)
            steps[optimizer, column], flops[optimizer, column], held[optimizer, column] = \
                nanolrm_step(variant, device, autocast, vocab_size)
    if s.baseline:
        baseline = import_checkout(s.baseline)
        for optimizer in ('adamw', 'muon'):
            for column, flags in columns.items():
                variant = replace(s, optimizer=optimizer, **flags)
                steps['baseline', optimizer, column] = nanolrm_step(
                    variant, device, autocast, vocab_size, baseline)[0]
    if s.nanogpt:
        steps['nanoGPT'] = nanogpt_step(replace(s, optimizer='adamw'), device, autocast, vocab_size)
    ms, step_peaks = median_ms_in_turn(steps, s, device)
    # the memory each variant needs at its peak, as if it ran alone: what it holds between steps
    # (weights, optimizer state) + the most its step allocates on top (activations, gradients;
    # with W built once, a copy of every weight that has multipliers)
    memory = {name: held[name]() + step_peaks[name] for name in held}
    if s.profile:
        print_profiles(steps, s, device)
    muon_ms, _ = median_ms_in_turn(muon_steps(s, device, vocab_size), s, device)

    ours, reference = muon_ms['nanoLRM Muon'], muon_ms.get('torch.optim.Muon', float('nan'))
    print('\n| optimizer step (hidden matrices) | ms |\n|---|---|\n'
          f'| nanoLRM Muon (batched) | {ours:.2f} |\n'
          f'| torch.optim.Muon | {reference:.2f} |\n'
          f'| ratio torch / ours | {reference / ours:.2f}x |\n'
          f"| nanoLRM Muon step / Muon training step | {ours / ms['muon', 'none']:.1%} |\n")
    peak = peak_flops(device)
    lrm_columns = [c for c in columns if c != 'none']
    header = ['training step', 'no multipliers', *lrm_columns, 'tokens/s (none)',
              'MFU (each column)', 'peak memory (each column)']
    print('| ' + ' | '.join(header) + ' |\n' + '|---' * len(header) + '|')
    for optimizer in ('adamw', 'muon'):
        plain = ms[optimizer, 'none']
        lrm = ' | '.join(f'{ms[optimizer, c]:.1f} ms ({ms[optimizer, c] / plain - 1:+.1%})'
                         for c in lrm_columns)
        mfu = ', '.join(f'{flops[optimizer, c] / ms[optimizer, c] * 1e3 / peak:.1%}'
                        for c in columns) if peak else '-'
        gib = ', '.join(f'{memory[optimizer, c] / 2**30:.2f} GiB'
                        for c in columns) if device.type == 'cuda' else '-'
        print(f'| {optimizer} | {plain:.1f} ms | {lrm} | {tokens / plain * 1e3:,.0f} | {mfu} '
              f'| {gib} |')
    ratios = ' | '.join(f"{ms['muon', c] / ms['adamw', c]:.2f}x" for c in columns)
    print(f'| Muon / AdamW | {ratios} | | | |')
    if s.baseline:
        print(f'\n| training step | this checkout | --baseline {s.baseline} | this / baseline |\n'
              '|---|---|---|---|')
        for optimizer in ('adamw', 'muon'):
            for c in columns:
                now, before = ms[optimizer, c], ms['baseline', optimizer, c]
                print(f'| {optimizer}, {c} | {now:.1f} ms | {before:.1f} ms | {now / before:.3f} |')
    if s.nanogpt:
        ratio = ms['adamw', 'none'] / ms['nanoGPT']
        print('\n| training step, AdamW, no multipliers | ms |\n|---|---|\n'
              f"| nanoGPT ({s.nanogpt}) | {ms['nanoGPT']:.1f} |\n"
              f"| nanoLRM | {ms['adamw', 'none']:.1f} |\n| nanoLRM / nanoGPT | {ratio:.2f}x |")


if __name__ == '__main__':
    main(sys.argv[1:])
