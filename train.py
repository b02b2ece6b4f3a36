"""
Train a nanoLRM GPT. Every flag is a field of `Settings` below; `python train.py --help` lists them.

    python train.py                                         # the plain baseline on tiny-shakespeare
    python train.py --row_mult --col_mult                   # + the paper's learnable multipliers
    python train.py --optimizer muon --row_mult --col_mult  # Muon for hidden matrices, else AdamW

The file reads in the order of a run: the settings; how each kind of parameter is trained (its
learning rate and weight decay) and the model and optimizer built; the LR schedule and the gradient
clipping; one training step; the evaluation; then train(), the loop: set the LR, evaluate, log and
save every --eval_interval, take a step, log every --log_interval. The guard rails (refused flags
and data, divergence and signal stops) come last, each called from the run in one line; runtime.py
holds the plumbing (flags, devices, torchrun, atomic checkpoints).
"""
import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from data.common import VocabularyError, get_tokenizer, load_dataset
from model import GPT, MATRICES, GPTConfig, doc
from muon import MuonAdamW
from runtime import (StopRequests, agreed_signal, append_log, average_over_ranks, check_ranges,
                     check_writable_folder, fail, init_distributed, leave_distributed,
                     load_checkpoint, parse_flags, peak_flops, pick_device, restore, rng_states,
                     run_script, save_atomically, truncate_log)

KINDS = MATRICES + ('gains', 'multipliers')  # the kinds of GPT.params_by_kind()
HIDDEN = ('q', 'k', 'v', 'o', 'gate', 'up', 'down')  # the hidden matrices (Muon's, with muon)
EVAL_SEED = 1338  # the evaluation batches' own RNG: the same batches for every --seed


@dataclass
class Settings(GPTConfig):  # the model's fields (model.py), then the training run's
    # data
    dataset: str = doc('shakespeare_char', 'data/ folder (or path) with meta.json and token files')
    input: str = doc('', 'local text file to prepare a missing dataset from (default: download)')
    # optimization
    optimizer: str = doc('adamw', 'adamw for everything, or muon for hidden matrices '
                                  '(AdamW for the rest)', ('adamw', 'muon'))
    batch_size: int = doc(64, 'sequences per micro-batch', allowed='[1, inf)')
    grad_accum: int = doc(1, 'micro-batches per optimizer step', allowed='[1, inf)')
    max_iters: int = doc(5000, 'optimizer steps', allowed='[0, inf)')
    learning_rate: float = doc(1e-3, 'peak AdamW learning rate '
                                     '(matrices W~, embedding, head, gains)', allowed='(0, inf)')
    min_lr: float = doc(1e-4, 'final learning rate; every group decays by the same factor '
                              'min_lr/learning_rate', allowed='[0, inf)')
    schedule: str = doc('cosine', 'warmup then cosine decay, or warmup-stable-decay (exponential '
                                  'decay to min_lr over the last decay_frac)', ('cosine', 'wsd'))
    warmup_iters: int = doc(100, 'linear warmup steps', allowed='[0, inf)')
    lr_decay_iters: int = doc(0, 'step where LR reaches min_lr (0 = max_iters)', allowed='[0, inf)')
    decay_frac: float = doc(0.2, 'wsd: fraction of lr_decay_iters spent in the final '
                                 'exponential decay', allowed='(0, 1]')
    weight_decay: float = doc(0.1, 'decoupled weight decay of matrices W~, embedding and head',
                              allowed='[0, inf)')
    matrix_lr: float | None = doc(None, 'AdamW learning rate of the hidden matrices W~ alone '
                                        '(default: learning_rate)', allowed='[0, inf)')
    matrix_wd: float | None = doc(None, 'AdamW weight decay of the hidden matrices W~ alone '
                                        '(default: weight_decay)', allowed='[0, inf)')
    lr_factors: str = doc('', "per-kind factors on the LR, as muP's LR multipliers, e.g. "
                              'up=2,gate=2,down=2; kinds: ' + ', '.join(KINDS))
    wd_factors: str = doc('', 'per-kind factors on the weight decay, e.g. up=0.5,gate=0.5,down=0.5')
    beta1: float = doc(0.9, 'AdamW beta1', allowed='[0, 1)')
    beta2: float = doc(0.99, 'AdamW beta2', allowed='[0, 1)')
    grad_clip: float = doc(1.0, 'clip the global grad norm to this; 0 = off', allowed='[0, inf)')
    z_loss: float = doc(0.0, 'add z_loss * logsumexp(logits)^2 to the training loss '
                             '(the paper: 1e-4)', allowed='[0, inf)')
    # learnable scales want an LR of their own, alike for gains and multipliers (the 2x2 study)
    gain_lr: float = doc(1e-2, "RMSNorm gains' AdamW learning rate", allowed='[0, inf)')
    freeze_gains: bool = doc(False, "keep the blocks' RMSNorm gains at 1 (the paper's equilibrium "
                                    "sweeps; the final norm's gain: --final_gain)")
    # learnable multipliers: how they are trained (paper section 4)
    mult_lr: float = doc(1e-2, "multipliers' AdamW learning rate", allowed='[0, inf)')
    mult_wd: float = doc(2e-3, "multipliers' weight decay (paper rule 1: small, not 0)",
                         allowed='[0, inf)')
    clip_multipliers: bool = doc(False, 'multipliers in grad clipping too (breaks paper rule 2)')
    # Muon (muon.py)
    muon_lr: float = doc(0.02, "Muon learning rate (with --muon_scale match_rms_adamw use AdamW's)",
                         allowed='[0, inf)')
    muon_momentum: float = doc(0.95, 'Muon momentum', allowed='[0, 1)')
    muon_nesterov: bool = doc(True, 'Nesterov momentum in Muon')
    ns_steps: int = doc(5, 'Newton-Schulz iterations', allowed='[1, inf)')
    muon_scale: str = doc('original', 'update scale: sqrt(max(1, rows/cols)) or '
                                      '0.2*sqrt(max(rows, cols))', ('original', 'match_rms_adamw'))
    muon_wd: float | None = doc(None, "Muon's decoupled weight decay (default: weight_decay)",
                                allowed='[0, inf)')
    # evaluation, logging, checkpoints
    eval_interval: int = doc(250, 'steps between evaluations, log.jsonl lines and checkpoints',
                             allowed='[1, inf)')
    eval_iters: int = doc(200, 'batches per loss estimate', allowed='[1, inf)')
    log_interval: int = doc(10, 'steps per progress line (also in log.jsonl)', allowed='[1, inf)')
    sample_tokens: int = doc(300, 'tokens to generate at the end (0 = none)', allowed='[0, inf)')
    out_dir: str = doc('out', 'where log.jsonl and ckpt.pt go')
    resume: bool = doc(False, 'continue from out_dir/ckpt.pt (flags given override its settings)')
    # system
    seed: int = doc(1337, 'random seed (init, batches, dropout)', allowed='[0, 4294967295]')
    device: str = doc('auto', 'where to train', ('auto', 'cpu', 'cuda', 'mps'))
    dtype: str = doc('auto', 'autocast dtype (auto: bfloat16 on CUDA, float16 where bf16 is '
                             'missing, else float32)', ('auto', 'float32', 'bfloat16', 'float16'))
    compile: bool | None = doc(None, 'torch.compile the model (default: on for CUDA)')
    build_once: bool = doc(True, 'with --grad_accum > 1, build each W = s r W~ c once per step, '
                                 'not once per micro-batch (the same gradients)')


# -------------------------------------------------------------------------------------------------
# how each kind of parameter is trained, and the model and optimizer built


def pick(value, default):
    return default if value is None else value


def param_groups(model, s):
    """How each kind of parameter is trained: the one place for learning rates and weight decay.
    Each role below sets a base LR and WD; --lr_factors and --wd_factors multiply them by kind."""
    kinds = model.params_by_kind()
    adamw = dict(use_muon=False, betas=(s.beta1, s.beta2))
    if s.optimizer == 'muon':
        matrices = dict(lr=s.muon_lr, weight_decay=pick(s.muon_wd, s.weight_decay), use_muon=True,
                        momentum=s.muon_momentum, nesterov=s.muon_nesterov, ns_steps=s.ns_steps,
                        muon_scale=s.muon_scale)
    else:
        matrices = dict(lr=pick(s.matrix_lr, s.learning_rate),
                        weight_decay=pick(s.matrix_wd, s.weight_decay), **adamw)
    roles = [
        # hidden matrices W~, weight-decayed: ||W~|| settles at equilibrium ~ sqrt(lr/wd) (sec. 1)
        ('matrices', HIDDEN, matrices),
        # token embedding and LM head: matrices too, but per-token rows: always AdamW
        ('embed_head', ('embed', 'head'), dict(lr=s.learning_rate, weight_decay=s.weight_decay,
                                               **adamw)),
        # RMSNorm gains are vectors: their gradients average over many entries; no weight decay
        ('gains', ('gains',), dict(lr=s.gain_lr, weight_decay=0.0, **adamw)),
        # multipliers: a small weight decay (--mult_wd) stops drift along symmetries (paper rule 1)
        ('multipliers', ('multipliers',), dict(lr=s.mult_lr, weight_decay=s.mult_wd, **adamw)),
    ]
    lr_factors, wd_factors = parse_factors(s.lr_factors, 'lr_factors'), \
        parse_factors(s.wd_factors, 'wd_factors')
    order = {p: i for i, p in enumerate(model.parameters())}
    groups = []
    for role, role_kinds, base in roles:
        # kinds with the same factors share a group (Muon batches a group's same-shape matrices)
        by_factors = {}
        for kind in role_kinds:
            factors = (lr_factors.get(kind, 1.0), wd_factors.get(kind, 1.0))
            by_factors.setdefault(factors, []).append(kind)
        for (lr_factor, wd_factor), group_kinds in by_factors.items():
            name = role if len(by_factors) == 1 else f"{role}:{'+'.join(group_kinds)}"
            params = sorted((p for kind in group_kinds for p in kinds[kind]), key=order.get)
            groups.append(dict(base, name=name, params=params, lr=base['lr'] * lr_factor,
                               weight_decay=base['weight_decay'] * wd_factor))
    if s.freeze_gains:  # the blocks' gains act as column multipliers and partly compensate a scale
        for p in kinds['gains']:
            if p is not model.norm_out.weight:  # the final gain stays as --final_gain says
                p.requires_grad_(False)
        groups = [dict(g, params=[p for p in g['params'] if p.requires_grad]) for g in groups]
    return [g for g in groups if g['params']]



def build(s, vocab_size, device):
    """The model, its parameter groups and the optimizer, as settings s say."""
    config = GPTConfig(**{f.name: getattr(s, f.name) for f in fields(GPTConfig)})
    config.vocab_size = vocab_size
    model = GPT(config).to(device)
    groups = param_groups(model, s)
    for g in groups:  # decoupled weight decay multiplies by 1 - lr*wd at every step
        if g['lr'] * g['weight_decay'] >= 1:
            fail(f"--lr_factors/--wd_factors: the {g['name']} group's lr x wd = "
                 f"{g['lr'] * g['weight_decay']:g} must be < 1")
    optimizer = make_optimizer(groups, s, device)
    for g in optimizer.param_groups:
        g['initial_lr'] = g['lr']  # the schedule scales this peak value
    return model, groups, optimizer



def make_optimizer(groups, s, device):
    # torch's AdamW is one fused kernel on CUDA, but steps tensor by tensor on CPU: there
    # MuonAdamW's foreach AdamW (the same math, tested) is faster, most of all over the multipliers
    if s.optimizer == 'adamw' and device.type == 'cuda':
        return torch.optim.AdamW(groups, fused=True)
    return MuonAdamW(groups)


# -------------------------------------------------------------------------------------------------
# the learning-rate schedule and the gradient clipping


def lr_factor(it, s):
    """The factor on every group's peak LR at step it: linear warmup, then cosine or wsd
    (warmup-stable-decay): the peak held, then an exponential decay to min_lr over the last
    decay_frac of the steps. The defaults give x10 over the last fifth; the paper's runs used x8
    over the last sixth (5B of 30B tokens): --decay_frac 0.167 with min_lr = learning_rate / 8.
    """
    decay_iters, min_ratio = s.lr_decay_iters or s.max_iters, s.min_lr / s.learning_rate
    if it < s.warmup_iters:
        return (it + 1) / (s.warmup_iters + 1)
    if s.schedule == 'cosine':
        progress = min(1.0, (it - s.warmup_iters) / max(1, decay_iters - s.warmup_iters))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_start = max(s.warmup_iters, decay_iters * (1 - s.decay_frac))
    progress = min(1.0, max(0.0, (it - decay_start) / max(1, decay_iters - decay_start)))
    return min_ratio ** progress  # lr = peak * (min_lr / peak) ** progress



def grad_norm(params):
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))



def clip_gradients(groups, s):
    """Clip the global gradient norm to --grad_clip; return pre-clip norms (rest, multipliers)."""
    mults = [p for g in groups if g['name'] == 'multipliers' for p in g['params']]
    rest = [p for g in groups if g['name'] != 'multipliers' for p in g['params']]
    rest_norm, mult_norm = grad_norm(rest), grad_norm(mults)
    if s.grad_clip > 0:
        # paper rule 2: multipliers are EXCLUDED from the norm and the clipping; early on their
        # gradients dominate it, so including them shrinks every other update (--clip_multipliers)
        clipped = rest + mults if s.clip_multipliers else rest
        norm = torch.hypot(rest_norm, mult_norm) if s.clip_multipliers else rest_norm
        grads = [p.grad for p in clipped if p.grad is not None]
        factor = (s.grad_clip / (norm + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, factor)  # g <- g * min(1, clip/||g||)
    return rest_norm, mult_norm


# -------------------------------------------------------------------------------------------------
# one training step


def train_step(step_model, optimizer, scaler, groups, s, micro_batches, autocast,
               weights_built_once=None, world_size=1):
    """One optimizer step over --grad_accum micro-batches (x, y): forward, backward, clip, step.
    Returns the mean loss and the pre-clip gradient norms (the rest, the multipliers), as tensors.
    weights_built_once: GPT.weights_built_once, to build each W once for all the micro-batches."""
    loss_sum, built_once = 0.0, weights_built_once is not None
    with weights_built_once() if built_once else contextlib.nullcontext():
        for micro_step, (x, y) in enumerate(micro_batches):
            # under DDP, average the gradients over the ranks only once, after the last micro-batch
            # (W built once: after the build's backward, below; DDP only sees the parameters)
            last = micro_step == len(micro_batches) - 1
            step_model.require_backward_grad_sync = last and not built_once
            with autocast:
                logits, loss = step_model(x, y)
                if s.z_loss:  # keeps softmax normalizer near 1: loss += z*mean(logsumexp(logits)^2)
                    loss = loss + s.z_loss * torch.logsumexp(logits, dim=-1).pow(2).mean()
                loss = loss / len(micro_batches)
            scaler.scale(loss).backward()
            loss_sum += loss.detach()
    if built_once and world_size > 1:
        average_over_ranks([p.grad for g in groups for p in g['params'] if p.grad is not None],
                           world_size)
    scaler.unscale_(optimizer)  # the true gradients, for their norms and the clipping
    norms = clip_gradients(groups, s)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, norms


def train_batch(data, s, batches, device, rank=0, world_size=1):
    """This rank's rows of the next training batch, on the device. batches: the batches' RNG."""
    rows = slice(rank * s.batch_size, (rank + 1) * s.batch_size)
    try:
        x, y = data.get_batch('train', s.batch_size * world_size, s.block_size, batches, rows)
    except VocabularyError as err:  # a file first read now: every rank reads the same ones
        fail(f'--dataset {s.dataset}: {err}')
    if device.type == 'cuda':
        x = x.pin_memory().to(device, non_blocking=True)
        y = y.pin_memory().to(device, non_blocking=True)
    return x, y


# -------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def estimate_loss(model, data, s, device, autocast, rank=0, world_size=1):
    """Mean loss over --eval_iters batches, the same at every evaluation and for every seed. Under
    DDP each rank evaluates its rows of every batch and the means are averaged over the ranks."""
    model.eval()
    losses, rows = {}, slice(rank * s.batch_size, (rank + 1) * s.batch_size)
    for split in ('train', 'val'):
        generator, total = torch.Generator().manual_seed(EVAL_SEED), 0.0
        for _ in range(s.eval_iters):
            x, y = data.get_batch(split, s.batch_size * world_size, s.block_size, generator, rows)
            with autocast:
                total += model(x.to(device), y.to(device))[1].item()
        if world_size > 1:
            total = torch.tensor(total, dtype=torch.float64, device=device)
            dist.all_reduce(total)
            total = total.item() / world_size
        losses[split] = total / s.eval_iters
    model.train()
    return losses



def activation_rms(model, data, s, device, autocast):
    """model.ACTIVATIONS' RMS (each block's output, branches, logits) on the first val batch."""
    x, _ = data.get_batch('val', s.batch_size, s.block_size,
                          torch.Generator().manual_seed(EVAL_SEED))
    with autocast:
        return model.activation_rms(x.to(device))


# -------------------------------------------------------------------------------------------------
# the run


def train(s):
    """Train with settings s; return the last evaluation's losses."""
    # ---- processes, device, data
    rank, world_size, device_name = init_distributed(s.device)  # torchrun: one process per device
    master = rank == 0  # the one process that prints, logs and saves
    device, dtype, autocast = pick_device(device_name, s.dtype)
    check_writable_folder(s.out_dir, '--out_dir')
    torch.manual_seed(s.seed + rank)  # rank 0 = one process; DDP copies rank 0's weights
    data = load_data(s)
    vocab_size = check_data(s, data, world_size)
    batches = torch.Generator().manual_seed(s.seed)  # the batches' own RNG, the same on every rank
    tokens_per_iter = s.batch_size * s.block_size * s.grad_accum * world_size

    # ---- the model, each kind's LR and WD, the optimizer; the state of a resumed run
    model, groups, optimizer = build(s, vocab_size, device)
    # float16 only: scale the loss so small gradients do not underflow; a step whose gradients
    # overflowed is skipped (and the scale lowered), which is not a divergence
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == 'float16')
    ckpt_path = os.path.join(s.out_dir, 'ckpt.pt')
    start_iter, elapsed, last_saved = 0, 0.0, None
    if s.resume:
        start_iter, elapsed = restore(ckpt_path, s, model, optimizer, scaler, batches, vocab_size,
                                      rank, world_size)
        last_saved = start_iter
    if s.resume and master:
        truncate_log(s.out_dir, start_iter)

    # ---- compiled, and under torchrun DDP (MuonAdamW shards its Newton-Schulz work itself)
    use_compile = device.type == 'cuda' if s.compile is None else s.compile
    compiled = torch.compile(model) if use_compile else model
    step_model = compiled
    if world_size > 1:  # DDP averages the gradients over the ranks in backward
        step_model = DDP(compiled, device_ids=[device.index] if device.type == 'cuda' else None)
    build_once = s.build_once and s.grad_accum > 1  # speed only: one build of each W per step
    weights_built_once = model.weights_built_once if build_once else None
    if master:
        print_setup(model, s, device, dtype, use_compile, world_size, tokens_per_iter, build_once)

    # ---- the loop
    flops_per_iter = model.flops_per_token() * tokens_per_iter / world_size  # per GPU
    peak, losses = peak_flops(device), {}
    t0 = timer = time.time()
    timed_iters = 0
    with StopRequests() as requests:  # Ctrl-C or SIGTERM: finish the step, save, exit
        for it in range(start_iter, s.max_iters + 1):
            # -- this step's learning rate: each group's peak LR times the schedule's factor
            for g in optimizer.param_groups:
                g['lr'] = g['initial_lr'] * lr_factor(it, s)
            # -- a Ctrl-C or SIGTERM during the last step (the ranks agree on it)
            signum = agreed_signal(requests, world_size, device)
            # -- every eval_interval and at the end (a resumed run logged its first one already)
            evaluating = it % s.eval_interval == 0 or it == s.max_iters
            evaluating = evaluating and not (s.resume and it == start_iter)
            saving = evaluating or signum > 0
            if saving:
                elapsed, t0 = elapsed + time.time() - t0, time.time()
            if evaluating:  # the losses, the same on every rank
                losses = estimate_loss(compiled, data, s, device, autocast, rank, world_size)
            if saving:  # nothing non-finite is logged or saved
                stop_if_not_finite(it, model, losses if evaluating else {}, last_saved, ckpt_path,
                                   signum)
            if evaluating and master:  # a log.jsonl line: losses, LRs, what the paper plots
                lrs = {f"lr_{g['name']}": g['lr'] for g in optimizer.param_groups}
                observables = model.observables() | activation_rms(model, data, s, device,
                                                                    autocast)
                append_log(s.out_dir, dict(iter=it, tokens=it * tokens_per_iter,
                                           train_loss=losses['train'], val_loss=losses['val'],
                                           elapsed=elapsed, optimizer=s.optimizer, **lrs,
                                           **observables))
                print(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            if saving:  # the checkpoint: all that a resumed run needs to continue exactly
                rng = rng_states(batches, device, world_size)  # every rank takes part
                checkpoint = dict(model=model.state_dict(), model_config=asdict(model.config),
                                  settings=asdict(s), meta=data.meta, iter=it,
                                  optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                                  elapsed=elapsed, rng=rng, world_size=world_size)
                if master:
                    save_atomically(checkpoint, ckpt_path)
                last_saved = it
                timer, timed_iters = time.time(), 0  # keep evaluation out of ms/iter
            if signum:
                exit_after_signal(it, signum, ckpt_path, master)
            if it == s.max_iters:
                break
            # -- one optimizer step: --grad_accum micro-batches, backward, clip, step
            micro_batches = [train_batch(data, s, batches, device, rank, world_size)
                             for _ in range(s.grad_accum)]
            loss, norms = train_step(step_model, optimizer, scaler, groups, s, micro_batches,
                                     autocast, weights_built_once, world_size)
            timed_iters += 1
            # -- every log_interval: the loss, the gradient norms, the speed
            if (it + 1) % s.log_interval == 0:
                if device.type == 'cuda':  # the steps timed are queued: wait until they are done
                    torch.cuda.synchronize(device)
                dt = (time.time() - timer) / timed_iters
                loss, rest_norm, mult_norm = mean_over_ranks(loss, world_size), *norms
                loss, rest_norm, mult_norm = loss.item(), rest_norm.item(), mult_norm.item()
                stop_if_loss_not_finite(it + 1, loss, rest_norm, mult_norm, last_saved, ckpt_path)
                mfu = f', MFU {flops_per_iter / dt / peak:.1%}' if peak else ''
                if master:
                    print(f'iter {it + 1}: loss {loss:.4f}, {dt * 1000:.1f} ms/iter, '
                          f'{tokens_per_iter / dt:,.0f} tokens/s{mfu}, grad norm {rest_norm:.3f}')
                    append_log(s.out_dir, dict(iter=it + 1, loss=loss, grad_norm=rest_norm,
                                               mult_grad_norm=mult_norm, ms_per_iter=dt * 1000))
                timer, timed_iters = time.time(), 0
    if losses and master:
        print(f"final val loss {losses['val']:.4f} after {s.max_iters} iters ({elapsed:.1f} s)")
    if s.sample_tokens > 0 and master:
        print_sample(model, data, s, device)
    del step_model  # DDP's reducer holds gloo work: it must go while the process group lives
    leave_distributed()
    return losses


def mean_over_ranks(loss, world_size):
    """The step's loss averaged over the ranks: every rank then sees, and decides on, the same."""
    if world_size > 1:
        dist.all_reduce(loss)
        loss /= world_size
    return loss


def print_setup(model, s, device, dtype, use_compile, world_size, tokens_per_iter, build_once):
    n_mults = sum(p.numel() for p in model.params_by_kind()['multipliers'])
    print(f'{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters ({n_mults} in '
          f'multipliers); optimizer {s.optimizer}; device {device}, {dtype}, compile '
          f'{use_compile}; {world_size} process(es), {tokens_per_iter:,} tokens per step'
          + (', W built once per step' if build_once else ''))


def print_sample(model, data, s, device):
    try:
        tokenizer = get_tokenizer(data.meta)
    except Exception as err:  # e.g. tiktoken's GPT-2 files cannot be downloaded offline
        print(f'no sample: {err}')
        return
    start = torch.tensor([tokenizer.encode('\n')], device=device)
    ids = model.generate(start, s.sample_tokens, top_k=200,
                         vocab_size=tokenizer.vocab_size)[0].tolist()
    print('---- sample ----\n' + tokenizer.decode(ids))



# =================================================================================================
# guard rails: refused flags and data, divergence and signal stops. None of it is needed to
# understand a step; each is called from the run in one line and ends the run in one line.
# =================================================================================================


def settings_from(argv):
    """Settings = defaults, or the checkpoint's with --resume, overridden by the flags given."""
    given = parse_flags(argv, Settings)
    s = Settings(**given)
    if s.resume:
        saved = load_checkpoint(os.path.join(s.out_dir, 'ckpt.pt'), '--resume')['settings']
        # the architecture and the optimizer's state cannot change under a checkpoint
        for name in [f.name for f in fields(GPTConfig)] + ['optimizer', 'freeze_gains']:
            if name in given and given[name] != saved[name]:
                fail(f'--{name} {given[name]} differs from the checkpoint ({saved[name]}): '
                     f'resume without it, or start a new --out_dir')
        s = Settings(**{**saved_settings(saved), **given})
    check(s)
    return s



def saved_settings(saved):
    """A checkpoint's settings as Settings takes them: gain_lr and mult_lr saved as None (or not
    at all) followed learning_rate then."""
    return {**saved, **{name: pick(saved.get(name), saved['learning_rate'])
                        for name in ('gain_lr', 'mult_lr')}}


def check(s):
    """Every bad setting -> one line naming the flag and what it allows (exit code 2). Each
    number's range stands beside its field (allowed=...); the rules here relate several flags."""
    check_ranges(s)
    parse_factors(s.lr_factors, 'lr_factors')
    if parse_factors(s.wd_factors, 'wd_factors').get('gains', 1) != 1:
        fail('--wd_factors gains: the RMSNorm gains have no weight decay to scale')
    pairs = [('learning_rate', 'weight_decay'), ('matrix_lr', 'matrix_wd'), ('mult_lr', 'mult_wd'),
             ('muon_lr', 'muon_wd')]
    for lr, wd in pairs:  # decoupled weight decay multiplies by 1 - lr*wd at every step
        product = pick(getattr(s, lr), s.learning_rate) * pick(getattr(s, wd), s.weight_decay)
        if product >= 1:
            fail(f'--{lr} x --{wd} = {product:g} must be < 1 '
                 '(each step multiplies the weights by 1 - lr*wd)')
    rules = [
        (s.n_embd % s.n_head == 0, f'--n_embd {s.n_embd} must be divisible by --n_head {s.n_head}'),
        ((s.n_embd // s.n_head) % 2 == 0,
         '--n_embd/--n_head = head size must be even for rotary embeddings'),
        (0 < s.min_lr <= s.learning_rate or (s.min_lr == 0 and s.schedule == 'cosine'),
         f'--min_lr {s.min_lr} must be in (0, --learning_rate] '
         '(0 is allowed with --schedule cosine)'),
        (s.dtype != 'float16' or (s.device in ('cuda', 'auto') and torch.cuda.is_available()),
         '--dtype float16 needs CUDA'),
        (s.device != 'cuda' or torch.cuda.is_available(),
         '--device cuda: no CUDA device is available'),
    ]
    for ok, message in rules:
        if not ok:
            fail(message)



def parse_factors(text, flag):
    """'up=2,gate=2' -> {'up': 2.0, 'gate': 2.0}; a bad kind or factor fails in one line."""
    factors = {}
    for item in filter(None, text.split(',')):
        kind, _, value = item.partition('=')
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if kind not in KINDS or not 0 <= factor < math.inf:
            fail(f'--{flag} {item}: expected kind=factor, a factor >= 0 and a kind among '
                 + ', '.join(KINDS))
        factors[kind] = factor
    return factors



def load_data(s):
    """The dataset's tokens (data.common.load_dataset: prepared first if missing, from --input or
    the download); one line, exit 2, when it cannot be had."""
    try:
        return load_dataset(s.dataset, s.input or None)
    except (OSError, ValueError, RuntimeError) as err:
        fail(f'--dataset {s.dataset}: {err}')  # e.g. offline: err says to pass --input


def check_data(s, data, world_size):
    """The vocabulary the model needs; one line, exit 2, where the data cannot feed the batches."""
    vocab_size = s.vocab_size or data.vocab_size
    if vocab_size < data.vocab_size:
        fail(f'--vocab_size {s.vocab_size} < the dataset vocabulary {data.vocab_size}')
    try:  # token ids beyond the vocabulary: every val file now, each train file when first read
        for i in range(len(data.files['val'])):
            data.check_vocabulary('val', i)
        for split in ('train', 'val'):  # each split needs a window of block_size + 1 tokens
            data.get_batch(split, 1, s.block_size, torch.Generator())
    except VocabularyError as err:
        fail(f'--dataset {s.dataset}: {err}')
    except ValueError as err:
        fail(f'--block_size {s.block_size}: {err}')
    if s.batch_size * world_size * (s.block_size + 1) > data.num_tokens('train'):
        fail(f'--batch_size {s.batch_size} x {world_size} ranks x --block_size {s.block_size}: '
             f"a batch larger than the whole training split ({data.num_tokens('train'):,} tokens)")
    return vocab_size



def stop(it, what, last_saved, ckpt_path):
    """A non-finite loss or weights: one line, exit code 1, and the last good checkpoint kept."""
    kept = f'the last good checkpoint is iter {last_saved} in {ckpt_path}' \
        if last_saved is not None else 'no checkpoint was written'
    print(f'iter {it}: {what}; stopped without saving ({kept})', file=sys.stderr)
    leave_distributed()
    sys.exit(1)


def stop_if_not_finite(it, model, losses, last_saved, ckpt_path, signum=0):
    """Before a save (an evaluation's, or a signal's when losses is empty): non-finite losses or
    weights end the run without saving. The ranks decide alike: their losses and weights agree."""
    finite = all(math.isfinite(v) for v in losses.values()) and \
        all(torch.isfinite(p).all() for p in model.parameters())
    if finite:
        return
    if losses:
        stop(it, f"the loss or the weights are not finite (val loss {losses['val']})", last_saved,
             ckpt_path)
    stop(it, f'{signal.Signals(signum).name}, but the weights are not finite', last_saved,
         ckpt_path)


def stop_if_loss_not_finite(it, loss, rest_norm, mult_norm, last_saved, ckpt_path):
    """A non-finite training loss is a divergence; a non-finite gradient norm alone is not: under
    float16 it marks a step that GradScaler skipped (its weights untouched)."""
    if not math.isfinite(loss):
        stop(it, f'training loss {loss}, gradient norm {rest_norm} (multipliers {mult_norm})',
             last_saved, ckpt_path)


def exit_after_signal(it, signum, ckpt_path, master):
    """After the checkpoint of a Ctrl-C or SIGTERM: one line, and the shell's exit code 128 + n
    (130 for SIGINT, 143 for SIGTERM)."""
    if master:
        print(f'stopped at iter {it} by {signal.Signals(signum).name}; checkpoint in {ckpt_path}; '
              'continue with --resume', file=sys.stderr)
    leave_distributed()
    sys.exit(128 + signum)


def main(argv=None):
    return train(settings_from(sys.argv[1:] if argv is None else argv))


if __name__ == '__main__':
    run_script(main)
