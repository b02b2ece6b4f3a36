"""
The guard rails of train.py: none of it is needed to understand a training step. Each is called
from the run in one line and ends it in one line:
  - refused settings and data: what is wrong and what to do, exit code 2 (runtime.fail);
  - divergence: a non-finite loss or weights stop the run without saving, exit code 1, the last
    good checkpoint kept;
  - Ctrl-C and SIGTERM: after the step's checkpoint, exit code 128 + the signal's number.
"""
import math
import os
import signal
import sys
from dataclasses import fields

import torch

from data.common import VocabularyError, load_dataset
from model import ROLES, GPTConfig
from runtime import (check_ranges, fail, leave_distributed, load_checkpoint, or_default,
                     parse_flags)


# -------------------------------------------------------------------------------------------------
# refused settings


def settings_from(argv, settings_class):
    """Settings = defaults, or the checkpoint's with --resume, overridden by the flags given."""
    given = parse_flags(argv, settings_class)
    cfg = settings_class(**given)
    if cfg.resume:
        saved = load_checkpoint(os.path.join(cfg.out_dir, 'ckpt.pt'), '--resume')['settings']
        saved = saved_settings(saved)
        # the architecture and the optimizer's state cannot change under a checkpoint
        for name in [f.name for f in fields(GPTConfig)] + ['optimizer', 'freeze_gains']:
            if name in given and given[name] != saved[name]:
                fail(f'--{name} {given[name]} differs from the checkpoint ({saved[name]}): '
                     f'resume without it, or start a new --out_dir')
        cfg = settings_class(**{**saved, **given})
    check(cfg)
    return cfg


def saved_settings(saved):
    """A checkpoint's settings as Settings takes them: gain_lr and mult_lr saved as None (or not
    at all) followed learning_rate then; log_mult (before --mult_param) is mult_param 'log'."""
    saved = {**saved, **{name: or_default(saved.get(name), saved['learning_rate'])
                         for name in ('gain_lr', 'mult_lr')}}
    if 'log_mult' in saved:
        saved['mult_param'] = 'log' if saved.pop('log_mult') else 'plain'
    return saved


def check(cfg):
    """Every bad setting -> one line naming the flag and what it allows (exit code 2). Each
    number's range stands beside its field (allowed=...); the rules here relate several flags."""
    check_ranges(cfg)
    parse_factors(cfg.lr_factors, 'lr_factors')
    if parse_factors(cfg.wd_factors, 'wd_factors').get('gains', 1) != 1:
        fail('--wd_factors gains: the RMSNorm gains have no weight decay to scale')
    pairs = [('learning_rate', 'weight_decay'), ('matrix_lr', 'matrix_wd'), ('mult_lr', 'mult_wd'),
             ('muon_lr', 'muon_wd')]
    for lr, wd in pairs:  # decoupled weight decay multiplies by 1 - lr*wd at every step
        product = or_default(getattr(cfg, lr), cfg.learning_rate) * \
            or_default(getattr(cfg, wd), cfg.weight_decay)
        if product >= 1:
            fail(f'--{lr} x --{wd} = {product:g} must be < 1 '
                 '(each step multiplies the weights by 1 - lr*wd)')
    rules = [
        (cfg.n_embd % cfg.n_head == 0,
         f'--n_embd {cfg.n_embd} must be divisible by --n_head {cfg.n_head}'),
        ((cfg.n_embd // cfg.n_head) % 2 == 0,
         '--n_embd/--n_head = head size must be even for rotary embeddings'),
        (0 < cfg.min_lr <= cfg.learning_rate or (cfg.min_lr == 0 and cfg.schedule == 'cosine'),
         f'--min_lr {cfg.min_lr} must be in (0, --learning_rate] '
         '(0 is allowed with --schedule cosine)'),
        (cfg.dtype != 'float16' or (cfg.device in ('cuda', 'auto') and torch.cuda.is_available()),
         '--dtype float16 needs CUDA'),
        (cfg.device != 'cuda' or torch.cuda.is_available(),
         '--device cuda: no CUDA device is available'),
    ]
    for ok, message in rules:
        if not ok:
            fail(message)


def parse_factors(text, flag):
    """'up=2,gate=2' -> {'up': 2.0, 'gate': 2.0}; a bad role or factor fails in one line."""
    factors = {}
    for item in filter(None, text.split(',')):
        role, _, value = item.partition('=')
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if role not in ROLES or not 0 <= factor < math.inf:
            fail(f'--{flag} {item}: expected role=factor, a factor >= 0 and a role among '
                 + ', '.join(ROLES))
        factors[role] = factor
    return factors


# -------------------------------------------------------------------------------------------------
# refused data


def load_data(cfg, world_size):
    """The dataset's tokens (data.common.load_dataset: prepared first if missing, from --input or
    the download) and the vocabulary the model needs; one line, exit 2, when the data cannot be
    had or cannot feed the batches."""
    try:
        data = load_dataset(cfg.dataset, cfg.input or None)
    except (OSError, ValueError, RuntimeError) as err:
        fail(f'--dataset {cfg.dataset}: {err}')  # e.g. offline: err says to pass --input
    vocab_size = cfg.vocab_size or data.vocab_size
    if vocab_size < data.vocab_size:
        fail(f'--vocab_size {cfg.vocab_size} < the dataset vocabulary {data.vocab_size}')
    try:  # token ids beyond the vocabulary: every val file now, each train file when first read
        for i in range(len(data.files['val'])):
            data.check_vocabulary('val', i)
        for split in ('train', 'val'):  # each split needs a window of block_size + 1 tokens
            data.get_batch(split, 1, cfg.block_size, torch.Generator())
    except VocabularyError as err:
        fail(f'--dataset {cfg.dataset}: {err}')
    except ValueError as err:
        fail(f'--block_size {cfg.block_size}: {err}')
    if cfg.batch_size * world_size * (cfg.block_size + 1) > data.num_tokens('train'):
        fail(f'--batch_size {cfg.batch_size} x {world_size} ranks x --block_size '
             f'{cfg.block_size}: a batch larger than the whole training split '
             f"({data.num_tokens('train'):,} tokens)")
    return data, vocab_size


# -------------------------------------------------------------------------------------------------
# divergence and signal stops


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
