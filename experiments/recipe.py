"""
The recipe the CPU studies share: nanoGPT's CPU model on tiny-shakespeare characters, trained in
equilibrium with the paper's schedule, and the two numbers the studies state before they run:

    equilibrium times  sum_t lr_t * wd        a run must last >= 3 of them, or the matrices still
                                              remember their initialization
    reach              sum_t lr_t             Adam moves a parameter by about its lr per step: a
                                              multiplier can travel about this far, which must be
                                              at least twice the distance it has to go

(lr_t = lr * factor_t, the schedule's factor at step t.)
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root
import runtime  # noqa: E402
import train  # noqa: E402

# nanoGPT's CPU recipe: 4 layers, 4 heads, width 128, block 64, batch 12 (0.87M parameters)
MODEL = ['--dataset', 'shakespeare_char', '--device', 'cpu', '--n_layer', '4', '--n_head', '4',
         '--n_embd', '128', '--block_size', '64', '--batch_size', '12', '--sample_tokens', '0']
MUON = ['--optimizer', 'muon', '--muon_scale', 'match_rms_adamw']  # AdamW's lr and wd carry over
SEEDS = (1340, 1341, 1342)  # no study tuned anything on these (the 2x2 tuned on 1337)
# the paper's schedule: warmup, a long constant phase, x8 exponential decay over the last sixth
SCHEDULE = ['--schedule', 'wsd', '--warmup_iters', '100', '--decay_frac', '0.167']


def factor_sum(flags):
    """sum_t factor_t of the LR schedule that train.py runs with these flags (parsed as it parses
    them): lr * factor_sum is a parameter's reach, lr * wd * factor_sum its equilibrium times."""
    s = train.Settings(**runtime.parse_flags(flags, train.Settings))
    return sum(train.lr_factor(it, s) for it in range(s.max_iters))


def equilibrium_run(steps, lr, wd, mult_lr, eval_interval=100, eval_iters=20, log_interval=100):
    """The flags of a run in equilibrium: one LR and WD for every matrix (the paper's global WD),
    the RMSNorm gains at that LR (no WD), the multipliers at their own LR and the paper's 2e-3,
    z-loss 1e-4 (the paper's). A flag given after these wins (argparse: the last one)."""
    return [*SCHEDULE, '--max_iters', str(steps), '--learning_rate', f'{lr:g}',
            '--min_lr', f'{lr / 8:g}', '--muon_lr', f'{lr:g}', '--weight_decay', f'{wd:g}',
            '--gain_lr', f'{lr:g}', '--mult_lr', f'{mult_lr:g}', '--mult_wd', '2e-3',
            '--z_loss', '1e-4', '--eval_interval', str(eval_interval),
            '--eval_iters', str(eval_iters), '--log_interval', str(log_interval)]


def multiplier_distance(record):
    """How far the multipliers went from their start (1): the largest |m - 1| at the end."""
    final = record['final']
    return max([final[k] - 1 for k in final if k.endswith('_mult_max')] +
               [1 - final[k] for k in final if k.endswith('_mult_min')], default=0.0)


def paired(records, key, baseline, other, seeds):
    """other minus baseline, per seed: {seed: difference of final val loss}; key(record) names
    a record's configuration."""
    loss = {(key(r), r['seed']): r['final_val_loss'] for r in records if r['status'] == 'ok'}
    return {s: loss[other, s] - loss[baseline, s] for s in seeds
            if (other, s) in loss and (baseline, s) in loss}


def write_report(folder, report, draw):
    """The table into folder/results.md and onto the console; then draw() the figure."""
    with open(os.path.join(folder, 'results.md'), 'w') as f:
        f.write(report)
    print(report)
    try:
        draw()
    except ImportError:
        print('no figure: pip install matplotlib')
