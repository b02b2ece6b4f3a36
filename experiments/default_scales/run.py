"""
The learnable scales' default LR at the README's quickstart: `python train.py` (no multipliers)
and `python train.py --row_mult --col_mult` (the paper's LRM) with nanoGPT's CPU recipe (2000
steps, cosine from lr 1e-3, wd 0.1), the RMSNorm gains and the multipliers at 1e-2 (the default
since experiments/2x2_equilibrium) or at the learning rate 1e-3 (the default before). Seeds
1340-1342, none used to tune anything.

    python experiments/default_scales/run.py          # resumable: recorded runs are skipped
    python experiments/default_scales/run.py lrm      # one configuration's runs (two side by side)

Writes results.json (one record per run) and results.md.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/
from recipe import MODEL, SEEDS, factor_sum, paired, write_report  # noqa: E402
from sweep import mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
QUICKSTART = MODEL + ['--max_iters', '2000', '--eval_iters', '20', '--log_interval', '100']
CONFIGS = {'none': {}, 'lrm': dict(row_mult='1', col_mult='1')}
SCALE_LRS = ('1e-3', '1e-2')  # the learning rate (the old default), the default


def point(config, scale_lr):
    """The gains, and the multipliers where there are any, at scale_lr."""
    lrs = dict(gain_lr=scale_lr, mult_lr=scale_lr) if CONFIGS[config] else dict(gain_lr=scale_lr)
    return {**CONFIGS[config], **lrs}


def run(configs):
    points = [point(c, lr) for c in configs for lr in SCALE_LRS]
    return [r for r in run_points(HERE, points, SEEDS, QUICKSTART) if r['status'] == 'ok']


def name(record):
    """The configuration and its scales' LR: ('lrm', '1e-2')."""
    p = record['point']
    return ('lrm' if 'row_mult' in p else 'none', p['gain_lr'])


def cell(differences):
    mean, std = mean_std(list(differences.values()))
    return (', '.join(f'{d:+.4f}' for d in differences.values()) + f' | {mean:+.4f} ± {std:.4f}')


def table(records):
    reach = {lr: float(lr) * factor_sum(QUICKSTART) for lr in SCALE_LRS}
    lines = ['Final val loss, seeds ' + ', '.join(map(str, SEEDS)) + '; reach of the scales '
             '(their lr x the sum of the schedule\'s factors): '
             + ', '.join(f'{reach[lr]:.2f} at {lr}' for lr in SCALE_LRS), '',
             '| configuration | scales\' LR | per seed | mean ± std |', '|---|---|---|---|']
    for config in CONFIGS:
        for lr in SCALE_LRS:
            losses = [r['final_val_loss'] for s in SEEDS for r in records
                      if name(r) == (config, lr) and r['seed'] == s]
            mean, std = mean_std(losses)
            lines.append(f"| {config} | {lr} | {', '.join(f'{x:.4f}' for x in losses)} | "
                         f'{mean:.4f} ± {std:.4f} |')
    lines += ['', 'Paired by seed (b minus a):', '', '| difference | per seed | mean ± std |',
              '|---|---|---|']
    for config in CONFIGS:
        lines.append(f'| {config}: scales at 1e-2 minus at 1e-3 | '
                     + cell(paired(records, name, (config, '1e-3'), (config, '1e-2'), SEEDS))
                     + ' |')
    for lr in SCALE_LRS:
        lines.append(f'| scales at {lr}: lrm minus none | '
                     + cell(paired(records, name, ('none', lr), ('lrm', lr), SEEDS)) + ' |')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__' and sys.argv[1:]:
    run(sys.argv[1:])
elif __name__ == '__main__':
    write_report(HERE, table(run(CONFIGS)), lambda: None)
