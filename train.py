"""
Train a nanoLRM GPT. Every flag is a field of `Settings` below; `python train.py --help` lists them.

    python train.py                                         # the plain baseline on tiny-shakespeare
    python train.py --row_mult --col_mult                   # + the paper's learnable multipliers
    python train.py --optimizer muon --row_mult --col_mult  # Muon for hidden matrices, else AdamW

The file reads in the order of a run: the settings; how each kind of parameter is trained (its
learning rate and weight decay); the LR schedule and the gradient clipping; one training step; the
evaluation; then train(), the loop. The operations a run needs but a reader does not (refused flags
and data, divergence and signal stops: guards.py; flags, devices, torchrun, checkpoints and resume:
runtime.py) are each one named call.
"""
import contextlib
import functools
import math
import os
import sys
import time
from dataclasses import dataclass, fields

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from data.common import VocabularyError
from guards import (exit_after_signal, fail, load_data, parse_factors, stop_if_loss_not_finite,
                    stop_if_not_finite)
from guards import settings_from as settings_with_checks
from model import GPT, ROLES, GPTConfig, flag, weights_built_once
from muon import MuonAdamW
from runtime import (StopRequests, agreed_signal, append_log, average_over_ranks,
                     leave_distributed, mean_over_ranks, or_default, peak_flops, resume_from,
                     run_script, save_training_state, start_run)
from sample import print_sample

HIDDEN = ('q', 'k', 'v', 'o', 'gate', 'up', 'down')  # the hidden matrices (Muon's, with muon)
EVAL_SEED = 1338  # the evaluation batches' own RNG: the same batches for every --seed


@dataclass
class Settings(GPTConfig):  # the model's fields (model.py), then the training run's
    # data
    dataset: str = flag('shakespeare_char', 'data/ folder (or path) with meta.json and token files')
    input: str = flag('', 'local text file to prepare a missing dataset from (default: download)')
    # optimization
    optimizer: str = flag('adamw', 'adamw for everything, or muon for hidden matrices '
                                   '(AdamW for the rest)', ('adamw', 'muon'))
    batch_size: int = flag(64, 'sequences per micro-batch', allowed='[1, inf)')
    grad_accum: int = flag(1, 'micro-batches per optimizer step', allowed='[1, inf)')
    max_iters: int = flag(5000, 'optimizer steps', allowed='[0, inf)')
    learning_rate: float = flag(1e-3, 'peak AdamW learning rate '
                                      '(matrices W~, embedding, head, gains)', allowed='(0, inf)')
    min_lr: float = flag(1e-4, 'final learning rate; every group decays by the same factor '
                               'min_lr/learning_rate', allowed='[0, inf)')
    schedule: str = flag('cosine', 'warmup then cosine decay, or warmup-stable-decay (exponential '
                                   'decay to min_lr over the last decay_frac)', ('cosine', 'wsd'))
    warmup_iters: int = flag(100, 'linear warmup steps', allowed='[0, inf)')
    lr_decay_iters: int = flag(0, 'step where LR reaches min_lr (0 = max_iters)',
                               allowed='[0, inf)')
    decay_frac: float = flag(0.2, 'wsd: fraction of lr_decay_iters spent in the final '
                                  'exponential decay', allowed='(0, 1]')
    weight_decay: float = flag(0.1, 'decoupled weight decay of matrices W~, embedding and head',
                               allowed='[0, inf)')
    matrix_lr: float | None = flag(None, 'AdamW learning rate of the hidden matrices W~ alone '
                                         '(default: learning_rate)', allowed='[0, inf)')
    matrix_wd: float | None = flag(None, 'AdamW weight decay of the hidden matrices W~ alone '
                                         '(default: weight_decay)', allowed='[0, inf)')
    lr_factors: str = flag('', "per-role factors on the LR, as muP's LR multipliers, e.g. "
                               'up=2,gate=2,down=2; roles: ' + ', '.join(ROLES))
    wd_factors: str = flag('', 'per-role factors on the weight decay, e.g. up=0.5,gate=0.5')
    beta1: float = flag(0.9, 'AdamW beta1', allowed='[0, 1)')
    beta2: float = flag(0.99, 'AdamW beta2', allowed='[0, 1)')
    grad_clip: float = flag(1.0, 'clip the global grad norm to this; 0 = off', allowed='[0, inf)')
    z_loss: float = flag(0.0, 'add z_loss * logsumexp(logits)^2 to the training loss '
                              '(the paper: 1e-4)', allowed='[0, inf)')
    # learnable scales want an LR of their own, alike for gains and multipliers (the 2x2 study)
    gain_lr: float = flag(1e-2, "RMSNorm gains' AdamW learning rate", allowed='[0, inf)')
    freeze_gains: bool = flag(False, "keep the blocks' RMSNorm gains at 1 (the paper's equilibrium "
                                     "sweeps; the final norm's gain: --final_gain)")
    # learnable multipliers: how they are trained (paper section 4)
    mult_lr: float = flag(1e-2, "multipliers' AdamW learning rate", allowed='[0, inf)')
    mult_wd: float = flag(2e-3, "multipliers' weight decay (paper rule 1: small, not 0)",
                          allowed='[0, inf)')
    clip_multipliers: bool = flag(False, 'multipliers in grad clipping too (breaks paper rule 2)')
    # Muon (muon.py)
    muon_lr: float = flag(0.02, "Muon learning rate (with --muon_scale match_rms_adamw, AdamW's)",
                          allowed='[0, inf)')
    muon_momentum: float = flag(0.95, 'Muon momentum', allowed='[0, 1)')
    muon_nesterov: bool = flag(True, 'Nesterov momentum in Muon')
    ns_steps: int = flag(5, 'Newton-Schulz iterations', allowed='[1, inf)')
    muon_scale: str = flag('original', 'update scale: sqrt(max(1, rows/cols)) or '
                                       '0.2*sqrt(max(rows, cols))', ('original', 'match_rms_adamw'))
    muon_wd: float | None = flag(None, "Muon's decoupled weight decay (default: weight_decay)",
                                 allowed='[0, inf)')
    # evaluation, logging, checkpoints
    eval_interval: int = flag(250, 'steps between evaluations, log.jsonl lines and checkpoints',
                              allowed='[1, inf)')
    eval_iters: int = flag(200, 'batches per loss estimate', allowed='[1, inf)')
    log_interval: int = flag(10, 'steps per progress line (also in log.jsonl)', allowed='[1, inf)')
    sample_tokens: int = flag(300, 'tokens to generate at the end (0 = none)', allowed='[0, inf)')
    out_dir: str = flag('out', 'where log.jsonl and ckpt.pt go')
    resume: bool = flag(False, 'continue from out_dir/ckpt.pt (flags given override its settings)')
    # system
    seed: int = flag(1337, 'random seed (init, batches, dropout)', allowed='[0, 4294967295]')
    device: str = flag('auto', 'where to train', ('auto', 'cpu', 'cuda', 'mps'))
    dtype: str = flag('auto', 'autocast dtype (auto: bfloat16 on CUDA, float16 where bf16 is '
                              'missing, else float32)', ('auto', 'float32', 'bfloat16', 'float16'))
    compile: bool | None = flag(None, 'torch.compile the model (default: on for CUDA)')
    build_once: bool = flag(True, 'with --grad_accum > 1, build each W = s r W~ c once per step, '
                                  'not once per micro-batch (the same gradients)')


# -------------------------------------------------------------------------------------------------
# how each kind of parameter is trained, and the model and optimizer built


def param_groups(model, cfg):
    """How each kind of parameter is trained: the one place for learning rates and weight decay.
    Each group below sets a base LR and WD for its roles; --lr_factors and --wd_factors multiply
    them by role."""
    params = model.params_by_role()
    adamw = dict(use_muon=False, betas=(cfg.beta1, cfg.beta2))
    if cfg.optimizer == 'muon':
        matrices = dict(lr=cfg.muon_lr, weight_decay=or_default(cfg.muon_wd, cfg.weight_decay),
                        use_muon=True, momentum=cfg.muon_momentum, nesterov=cfg.muon_nesterov,
                        ns_steps=cfg.ns_steps, muon_scale=cfg.muon_scale)
    else:
        matrices = dict(lr=or_default(cfg.matrix_lr, cfg.learning_rate),
                        weight_decay=or_default(cfg.matrix_wd, cfg.weight_decay), **adamw)
    bases = [
        # hidden matrices W~, weight-decayed: ||W~|| settles at equilibrium ~ sqrt(lr/wd) (sec. 1)
        ('matrices', HIDDEN, matrices),
        # token embedding and LM head: matrices too, but per-token rows: always AdamW
        ('embed_head', ('embed', 'head'), dict(lr=cfg.learning_rate,
                                               weight_decay=cfg.weight_decay, **adamw)),
        # RMSNorm gains are vectors: their gradients average over many entries; no weight decay
        ('gains', ('gains',), dict(lr=cfg.gain_lr, weight_decay=0.0, **adamw)),
        # multipliers: a small weight decay (--mult_wd) stops drift along symmetries (paper rule 1)
        ('multipliers', ('multipliers',), dict(lr=cfg.mult_lr, weight_decay=cfg.mult_wd, **adamw)),
    ]
    lr_factors = parse_factors(cfg.lr_factors, 'lr_factors')
    wd_factors = parse_factors(cfg.wd_factors, 'wd_factors')
    order = {p: i for i, p in enumerate(model.parameters())}
    groups = []
    for group, roles, base in bases:
        # roles with the same factors share a group (Muon batches a group's same-shape matrices)
        by_factors = {}
        for role in roles:
            by_factors.setdefault((lr_factors.get(role, 1.0), wd_factors.get(role, 1.0)),
                                  []).append(role)
        for (lr_factor, wd_factor), same in by_factors.items():
            name = group if len(by_factors) == 1 else f"{group}:{'+'.join(same)}"
            group_params = sorted((p for role in same for p in params[role]), key=order.get)
            groups.append(dict(base, name=name, params=group_params, lr=base['lr'] * lr_factor,
                               weight_decay=base['weight_decay'] * wd_factor))
    if cfg.freeze_gains:  # the blocks' gains act as column multipliers, partly compensating a scale
        for p in params['gains']:
            if p is not model.norm_out.weight:  # the final gain stays as --final_gain says
                p.requires_grad_(False)
        groups = [dict(g, params=[p for p in g['params'] if p.requires_grad]) for g in groups]
    return [g for g in groups if g['params']]


def build(cfg, vocab_size, device):
    """The model, its parameter groups and the optimizer, as the settings cfg say."""
    config = GPTConfig(**{f.name: getattr(cfg, f.name) for f in fields(GPTConfig)})
    config.vocab_size = vocab_size
    model = GPT(config).to(device)
    groups = param_groups(model, cfg)
    for g in groups:  # decoupled weight decay multiplies by 1 - lr*wd at every step
        if g['lr'] * g['weight_decay'] >= 1:
            fail(f"--lr_factors/--wd_factors: the {g['name']} group's lr x wd = "
                 f"{g['lr'] * g['weight_decay']:g} must be < 1")
    optimizer = make_optimizer(groups, cfg, device)
    for g in optimizer.param_groups:
        g['initial_lr'] = g['lr']  # the schedule scales this peak value
    return model, groups, optimizer


def make_optimizer(groups, cfg, device):
    # torch's AdamW is one fused kernel on CUDA, but steps tensor by tensor on CPU: there
    # MuonAdamW's foreach AdamW (the same math, tested) is faster, most of all over the multipliers
    if cfg.optimizer == 'adamw' and device.type == 'cuda':
        return torch.optim.AdamW(groups, fused=True)
    return MuonAdamW(groups)


# -------------------------------------------------------------------------------------------------
# the learning-rate schedule and the gradient clipping


def lr_factor(it, cfg):
    """The factor on every group's peak LR at step it: linear warmup, then cosine or wsd
    (warmup-stable-decay): the peak held, then an exponential decay to min_lr over the last
    decay_frac of the steps. The defaults give x10 over the last fifth; the paper's runs used x8
    over the last sixth (5B of 30B tokens): --decay_frac 0.167 with min_lr = learning_rate / 8.
    """
    decay_iters, min_ratio = cfg.lr_decay_iters or cfg.max_iters, cfg.min_lr / cfg.learning_rate
    if it < cfg.warmup_iters:
        return (it + 1) / (cfg.warmup_iters + 1)
    if cfg.schedule == 'cosine':
        progress = min(1.0, (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_start = max(cfg.warmup_iters, decay_iters * (1 - cfg.decay_frac))
    progress = min(1.0, max(0.0, (it - decay_start) / max(1, decay_iters - decay_start)))
    return min_ratio ** progress  # lr = peak * (min_lr / peak) ** progress


def grad_norm(params):
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def clip_gradients(groups, cfg):
    """Clip the global gradient norm to --grad_clip; return pre-clip norms (rest, multipliers)."""
    mults = [p for g in groups if g['name'] == 'multipliers' for p in g['params']]
    rest = [p for g in groups if g['name'] != 'multipliers' for p in g['params']]
    rest_norm, mult_norm = grad_norm(rest), grad_norm(mults)
    if cfg.grad_clip > 0:
        # paper rule 2: multipliers are EXCLUDED from the norm and the clipping; early on their
        # gradients dominate it, so including them shrinks every other update (--clip_multipliers)
        clipped = rest + mults if cfg.clip_multipliers else rest
        norm = torch.hypot(rest_norm, mult_norm) if cfg.clip_multipliers else rest_norm
        grads = [p.grad for p in clipped if p.grad is not None]
        factor = (cfg.grad_clip / (norm + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, factor)  # g <- g * min(1, clip/||g||)
    return rest_norm, mult_norm


# -------------------------------------------------------------------------------------------------
# one training step


def train_step(step_model, optimizer, scaler, groups, cfg, micro_batches, autocast,
               weights_built_once=None, world_size=1):
    """One optimizer step over --grad_accum micro-batches (x, y): forward, backward, clip, step.
    Returns the mean loss and the pre-clip gradient norms (the rest, the multipliers), as tensors.
    weights_built_once: model.weights_built_once bound to the model, to build each W once for all
    the micro-batches."""
    loss_sum, built_once = 0.0, weights_built_once is not None
    with weights_built_once() if built_once else contextlib.nullcontext():
        for micro_step, (x, y) in enumerate(micro_batches):
            # under DDP, average the gradients over the ranks only once, after the last micro-batch
            # (W built once: after the build's backward, below; DDP only sees the parameters)
            last = micro_step == len(micro_batches) - 1
            step_model.require_backward_grad_sync = last and not built_once
            with autocast:
                logits, loss = step_model(x, y)
                if cfg.z_loss:  # keeps the softmax normalizer near 1: += z mean(logsumexp^2)
                    loss = loss + cfg.z_loss * torch.logsumexp(logits, dim=-1).pow(2).mean()
                loss = loss / len(micro_batches)
            scaler.scale(loss).backward()
            loss_sum += loss.detach()
    if built_once and world_size > 1:
        average_over_ranks([p.grad for g in groups for p in g['params'] if p.grad is not None],
                           world_size)
    scaler.unscale_(optimizer)  # the true gradients, for their norms and the clipping
    norms = clip_gradients(groups, cfg)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, norms


def train_batch(data, cfg, batches, device, rank=0, world_size=1):
    """This rank's rows of the next training batch, on the device. batches: the batches' RNG."""
    rows = slice(rank * cfg.batch_size, (rank + 1) * cfg.batch_size)
    try:
        x, y = data.get_batch('train', cfg.batch_size * world_size, cfg.block_size, batches, rows)
    except VocabularyError as err:  # a file first read now: every rank reads the same ones
        fail(f'--dataset {cfg.dataset}: {err}')
    if device.type == 'cuda':
        x = x.pin_memory().to(device, non_blocking=True)
        y = y.pin_memory().to(device, non_blocking=True)
    return x, y


# -------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def estimate_loss(model, data, cfg, device, autocast, rank=0, world_size=1):
    """Mean loss over --eval_iters batches, the same at every evaluation and for every seed. Under
    DDP each rank evaluates its rows of every batch and the means are averaged over the ranks."""
    model.eval()
    losses, rows = {}, slice(rank * cfg.batch_size, (rank + 1) * cfg.batch_size)
    for split in ('train', 'val'):
        generator, total = torch.Generator().manual_seed(EVAL_SEED), 0.0
        for _ in range(cfg.eval_iters):
            x, y = data.get_batch(split, cfg.batch_size * world_size, cfg.block_size, generator,
                                  rows)
            with autocast:
                total += model(x.to(device), y.to(device))[1].item()
        if world_size > 1:
            total = torch.tensor(total, dtype=torch.float64, device=device)
            dist.all_reduce(total)
            total = total.item() / world_size
        losses[split] = total / cfg.eval_iters
    model.train()
    return losses


def log_evaluation(model, optimizer, data, cfg, device, autocast, it, losses, elapsed,
                   tokens_per_iter):
    """A log.jsonl line: the losses, each group's LR, and what the paper plots of the weights and
    of the activations (model.ACTIVATIONS' RMS on the first val batch)."""
    lrs = {f"lr_{g['name']}": g['lr'] for g in optimizer.param_groups}
    x, _ = data.get_batch('val', cfg.batch_size, cfg.block_size,  # the first val batch
                          torch.Generator().manual_seed(EVAL_SEED))
    with autocast:
        observables = model.observables() | model.activation_rms(x.to(device))
    append_log(cfg.out_dir, dict(iter=it, tokens=it * tokens_per_iter, train_loss=losses['train'],
                                 val_loss=losses['val'], elapsed=elapsed, optimizer=cfg.optimizer,
                                 **lrs, **observables))
    print(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")


def log_step(cfg, it, loss, rest_norm, mult_norm, dt, tokens_per_iter, mfu):
    print(f'iter {it}: loss {loss:.4f}, {dt * 1000:.1f} ms/iter, {tokens_per_iter / dt:,.0f} '
          f'tokens/s' + (f', MFU {mfu:.1%}' if mfu else '') + f', grad norm {rest_norm:.3f}')
    append_log(cfg.out_dir, dict(iter=it, loss=loss, grad_norm=rest_norm,
                                 mult_grad_norm=mult_norm, ms_per_iter=dt * 1000))


# -------------------------------------------------------------------------------------------------
# the run


def train(cfg):
    """Train with settings cfg; return the last evaluation's losses."""
    # ---- processes (torchrun: one per device; rank 0 prints, logs, saves), device, data
    rank, world_size, device, dtype, autocast = start_run(cfg)
    master = rank == 0
    torch.manual_seed(cfg.seed + rank)  # rank 0 = one process; DDP copies rank 0's weights
    data, vocab_size = load_data(cfg, world_size)
    batches = torch.Generator().manual_seed(cfg.seed)  # the batches' own RNG, alike on every rank
    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.grad_accum * world_size

    # ---- the model, each kind's LR and WD, the optimizer; a resumed run's state
    model, groups, optimizer = build(cfg, vocab_size, device)
    # float16 only: loss scaling; a step whose gradients overflowed is skipped, not a divergence
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == 'float16')
    ckpt_path = os.path.join(cfg.out_dir, 'ckpt.pt')
    start_iter, elapsed = resume_from(ckpt_path, cfg, model, optimizer, scaler, batches,
                                      vocab_size, rank, world_size) if cfg.resume else (0, 0.0)
    last_saved = start_iter if cfg.resume else None  # the checkpoint a divergence stop keeps

    # ---- compiled, under torchrun DDP; W built once per step with gradient accumulation
    compiled, step_model, use_compile = compile_and_wrap(model, cfg, device, world_size)
    build_once = cfg.build_once and cfg.grad_accum > 1  # speed only: one build of W per step
    built_once = functools.partial(weights_built_once, model) if build_once else None
    if master:
        print_setup(model, cfg, device, dtype, use_compile, world_size, tokens_per_iter, build_once)

    # ---- the loop
    flops_per_iter = model.flops_per_token() * tokens_per_iter / world_size  # per GPU, for MFU
    peak, losses, timed_iters = peak_flops(device), {}, 0
    t0 = timer = time.time()
    with StopRequests() as requests:  # Ctrl-C or SIGTERM: finish the step, save, exit
        for it in range(start_iter, cfg.max_iters + 1):
            for g in optimizer.param_groups:  # this step's LR: each group's peak x the schedule
                g['lr'] = g['initial_lr'] * lr_factor(it, cfg)
            signum = agreed_signal(requests, world_size, device)  # a stop asked during the step
            # evaluate every eval_interval and at the end (a resumed run logged its first already)
            evaluating = (it % cfg.eval_interval == 0 or it == cfg.max_iters) and \
                not (cfg.resume and it == start_iter)
            if evaluating or signum:  # evaluate, log and save (nothing non-finite is saved)
                elapsed, t0 = elapsed + time.time() - t0, time.time()
                if evaluating:
                    losses = estimate_loss(compiled, data, cfg, device, autocast, rank, world_size)
                stop_if_not_finite(it, model, losses if evaluating else {}, last_saved, ckpt_path,
                                   signum)
                if evaluating and master:
                    log_evaluation(model, optimizer, data, cfg, device, autocast, it, losses,
                                   elapsed, tokens_per_iter)
                save_training_state(ckpt_path, model, optimizer, scaler, cfg, data.meta, it,
                                    elapsed, batches, device, world_size, master)
                last_saved, timer, timed_iters = it, time.time(), 0  # evaluation is not timed
            if signum:
                exit_after_signal(it, signum, ckpt_path, master)
            if it == cfg.max_iters:
                break
            # one optimizer step: --grad_accum micro-batches, backward, clip, step
            micro_batches = [train_batch(data, cfg, batches, device, rank, world_size)
                             for _ in range(cfg.grad_accum)]
            loss, norms = train_step(step_model, optimizer, scaler, groups, cfg, micro_batches,
                                     autocast, built_once, world_size)
            timed_iters += 1
            if (it + 1) % cfg.log_interval == 0:  # the loss, the gradient norms, the speed
                if device.type == 'cuda':  # the steps timed are queued: wait until they are done
                    torch.cuda.synchronize(device)
                dt = (time.time() - timer) / timed_iters
                loss, rest_norm, mult_norm = (x.item() for x in (
                    mean_over_ranks(loss, world_size), *norms))
                stop_if_loss_not_finite(it + 1, loss, rest_norm, mult_norm, last_saved, ckpt_path)
                if master:
                    log_step(cfg, it + 1, loss, rest_norm, mult_norm, dt, tokens_per_iter,
                             peak and flops_per_iter / dt / peak)
                timer, timed_iters = time.time(), 0
    if losses and master:
        print(f"final val loss {losses['val']:.4f} after {cfg.max_iters} iters ({elapsed:.1f} s)")
    if cfg.sample_tokens > 0 and master:
        print_sample(model, data.meta, cfg.sample_tokens, device)
    del step_model  # DDP's reducer holds gloo work: it must go while the process group lives
    leave_distributed()
    return losses


def compile_and_wrap(model, cfg, device, world_size):
    """The model as the loop runs it: compiled (default: on CUDA) and, under torchrun, in DDP, which
    averages the gradients over the ranks in backward (MuonAdamW shards its Newton-Schulz work)."""
    use_compile = device.type == 'cuda' if cfg.compile is None else cfg.compile
    compiled = step_model = torch.compile(model) if use_compile else model
    if world_size > 1:
        step_model = DDP(compiled, device_ids=[device.index] if device.type == 'cuda' else None)
    return compiled, step_model, use_compile


def print_setup(model, cfg, device, dtype, use_compile, world_size, tokens_per_iter, build_once):
    n_mults = sum(p.numel() for p in model.params_by_role()['multipliers'])
    print(f'{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters ({n_mults} in '
          f'multipliers); optimizer {cfg.optimizer}; device {device}, {dtype}, compile '
          f'{use_compile}; {world_size} process(es), {tokens_per_iter:,} tokens per step'
          + (', W built once per step' if build_once else ''))


def settings_from(argv):
    """Settings = defaults, or the checkpoint's with --resume, overridden by the flags given;
    every bad one refused in one line (guards.py)."""
    return settings_with_checks(argv, Settings)


def main(argv=None):
    return train(settings_from(sys.argv[1:] if argv is None else argv))


if __name__ == '__main__':
    run_script(main)
