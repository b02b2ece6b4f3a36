"""
Row multipliers on the LM head (paper Sec. 4.4: they hurt; the model fits the marginal token
distribution "lazily" through them). The paper's LRM (`all`, the head unchanged) against the same
with a row multiplier per token on the head (`head_rows`), AdamW and Muon, 3 seeds; what the head
rows learned, against each token's log-frequency in the training text; and a control, AdamW with the
RMSNorm gains (the final one is the head's column scale) at the multipliers' LR.

Every run: --row_mult --col_mult, the recipe of experiments/placements (1000 steps in equilibrium,
lr 1e-3, wd 5 on every matrix, z-loss 1e-4, multipliers at lr 1e-2 and wd 2e-3).

    python experiments/head_rows/run.py     # resumable: recorded runs are skipped

Writes results.json (one record per run), head_rows.json (each run's head rows and the token
frequencies), results.md and head_rows.png.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/
from recipe import (MODEL, MUON, SEEDS, equilibrium_run, multiplier_distance,  # noqa: E402
                    paired, factor_sum, write_report)
from sweep import fail, mean_std, read_checkpoint, run_folder, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
STEPS, LR, WD, MULT_LR = 1000, 1e-3, 5.0, 1e-2
RUN = MODEL + equilibrium_run(STEPS, LR, WD, MULT_LR) + ['--row_mult', '--col_mult']
# the configurations: each optimizer, and a control: AdamW with the RMSNorm gains (the final one
# is the head's column scale) at the multipliers' LR, 1e-2, not 1e-3 (reach 8.5, not 0.85): 10 x
# the --gain_lr that equilibrium_run gives them
OPTIMIZERS = {'adamw': [], 'muon': MUON, 'adamw, gains at lr 1e-2': ['--lr_factors', 'gains=10']}


def folder(name):
    """Where a configuration's runs go: its name without spaces or commas."""
    return os.path.join(HERE, name.replace(', ', '_').replace(' ', '_'))


def config(record):
    return record['point']['mult_placement']


def token_log_frequency():
    """log10 of each character's share of the training split (the marginal distribution)."""
    folder = os.path.join(REPO, 'data', 'shakespeare_char')
    if not os.path.exists(os.path.join(folder, 'train.bin')):
        fail(f'no {folder}/train.bin: run data/shakespeare_char/prepare.py first')
    with open(os.path.join(folder, 'meta.json')) as f:
        vocab_size = json.load(f)['vocab_size']
    ids = np.fromfile(os.path.join(folder, 'train.bin'), dtype=np.uint16)
    counts = np.bincount(ids, minlength=vocab_size)
    return np.log10(np.maximum(counts, 1) / counts.sum())


def head_rows(optimizer, record):
    """The head's row multipliers r_i at the end of a head_rows run."""
    ckpt = read_checkpoint(run_folder(folder(optimizer), record))  # missing or damaged: one line
    return ckpt['model']['head.row_mult'].tolist()


def table(results, learned):
    reach = MULT_LR * factor_sum(RUN)
    lines = [f'Equilibrium times lr * wd * sum_t factor_t = {LR * WD * factor_sum(RUN):.2f}; '
             f"the multipliers' reach mult_lr * sum_t factor_t = {reach:.2f}.\n",
             '| configuration | placement | final val loss, mean ± std | per seed | '
             'head_rows minus '
             'all, per seed (mean ± std) | corr(head row, log10 token frequency), per seed | '
             'largest abs(m - 1) |', '|---|---|---|---|---|---|---|']
    for optimizer, records in results.items():
        deltas = paired(records, config, 'all', 'head_rows', SEEDS)
        for placement in ('all', 'head_rows'):
            runs = [r for r in records if config(r) == placement and r['status'] == 'ok']
            if not runs:
                continue
            mean, std = mean_std([r['final_val_loss'] for r in runs])
            seeds = ', '.join(f"{r['final_val_loss']:.4f}" for r in runs)
            delta = '-'
            if placement == 'head_rows' and deltas:
                delta_mean, delta_std = mean_std(list(deltas.values()))
                delta = (', '.join(f'{d:+.4f}' for d in deltas.values())
                         + f' ({delta_mean:+.4f} ± {delta_std:.4f})')
            corr = '-' if placement == 'all' else ', '.join(
                f"{learned[optimizer][r['name']]['corr']:+.2f}" for r in runs)
            lines.append(f'| {optimizer} | {placement} | {mean:.4f} ± {std:.4f} | {seeds} | '
                         f'{delta} | {corr} | {max(map(multiplier_distance, runs)):.2f} |')
    return '\n'.join(lines) + '\n'


def plot(results, learned, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    log_freq = token_log_frequency()
    for i, (optimizer, runs) in enumerate(learned.items()):
        for j, (name, data) in enumerate(runs.items()):
            axes[0].scatter(log_freq, data['rows'], s=10, alpha=0.6, color=f'C{i}',
                            marker='os^'[j % 3], label=f'{optimizer}, {name}')
        deltas = paired(results[optimizer], config, 'all', 'head_rows', SEEDS)
        axes[1].scatter([i] * len(deltas), list(deltas.values()), color='C0', s=18,
                        label=None if i else 'one seed')
        if deltas:
            axes[1].errorbar(i + 0.1, *mean_std(list(deltas.values())), fmt='o', color='C3',
                             capsize=4, label=None if i else f'mean ± std, {len(deltas)} seeds')
    axes[0].set_xlabel('log10 frequency of the token in the training text')
    axes[0].set_ylabel('head row multiplier r_i')
    axes[0].legend(fontsize=6)
    axes[1].axhline(0, color='grey', lw=0.8)
    axes[1].set_xticks(range(len(learned)), list(learned))
    axes[1].set_title('final val loss, head_rows minus all, paired by seed', fontsize=9)
    axes[1].legend(fontsize=7, loc='upper left')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    points = [dict(mult_placement=p) for p in ('all', 'head_rows')]
    results = {optimizer: run_points(folder(optimizer), points, SEEDS, RUN + flags)
               for optimizer, flags in OPTIMIZERS.items()}
    log_freq, learned = token_log_frequency(), {}
    for optimizer, records in results.items():
        learned[optimizer] = {}
        for r in records:
            if config(r) == 'head_rows' and r['status'] == 'ok':
                rows = head_rows(optimizer, r)
                learned[optimizer][r['name']] = dict(
                    rows=rows, corr=float(np.corrcoef(rows, log_freq)[0, 1]))
    with open(os.path.join(HERE, 'head_rows.json'), 'w') as f:
        json.dump(dict(log10_token_frequency=log_freq.tolist(), runs=learned), f)
    write_report(HERE, table(results, learned),
                 lambda: plot(results, learned, os.path.join(HERE, 'head_rows.png')))
