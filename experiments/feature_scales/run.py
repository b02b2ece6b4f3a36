"""
Feature-scale diversity (paper Fig. 3): the distribution of the row norms of each effective matrix W
= s r W~ c. The paper: narrow without vector multipliers (weight decay holds every row of W~ at
about the same norm), broad with them (each row's scale is learned). Without multipliers and with
the paper's LRM (--row_mult --col_mult), AdamW and Muon, 2 seeds; the row norms of every matrix of
every layer at the end, plotted for W_Q and W_gate as in the paper.

Every run: the recipe of experiments/placements (1000 steps in equilibrium, lr 1e-3, wd 5 on every
matrix, z-loss 1e-4, multipliers at lr 1e-2 and wd 2e-3).

    python experiments/feature_scales/run.py     # resumable: recorded runs are skipped

Writes results.json (one record per run), row_norms.json (every row norm, by run and matrix),
results.md and feature_scales.png. A recorded run whose checkpoint is absent (a fresh clone) is
read from the committed row_norms.json, so the table and the figure redraw without training.

As in the paper's Fig. 3, each layer's row norms are divided by that layer's mean before the
layers are pooled: the distributions compare the shape of each layer's rows, not the layers' scales.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from model import GPT, config_from_checkpoint  # noqa: E402
from recipe import MODEL, MUON, SEEDS, equilibrium_run, write_report  # noqa: E402
from sweep import read_checkpoint, read_json, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = MODEL + equilibrium_run(1000, 1e-3, 5.0, 1e-2)
CONFIGS = {'none': [], 'lrm': ['--row_mult', '--col_mult']}
OPTIMIZERS = {'adamw': [], 'muon': MUON}
SHOWN = ('attn.q', 'mlp.gate')  # the paper's Fig. 3


def row_norms(ckpt_path):
    """{matrix name: the L2 norm of each row of its effective W} of a checkpoint's model."""
    ckpt = read_checkpoint(os.path.dirname(ckpt_path))  # damaged: one line
    model = GPT(config_from_checkpoint(ckpt['model_config']))
    model.load_state_dict(ckpt['model'])
    with torch.no_grad():
        return {name: m.effective_weight().norm(dim=1).tolist()
                for name, m in model.matrix_layers().items()}


def spread(norms):
    """The width of a row-norm distribution: the 90th over the 10th percentile."""
    low, high = np.percentile(norms, [10, 90])
    return float(high / low)


def decades_below_median(norms):
    """How far the lowest row sits below the median row: log10(median / min)."""
    return float(np.log10(np.median(norms) / np.min(norms)))


def layers(run, matrix):
    """The row norms of one matrix kind, one array per layer."""
    return [np.array(run[m]) for m in run if m.startswith('blocks.') and m.endswith(matrix)]


def normalized(run, matrix):
    """Each layer's row norms over that layer's mean, the layers pooled (the paper's Fig. 3)."""
    return np.concatenate([norms / norms.mean() for norms in layers(run, matrix)])


def table(norms):
    matrices = sorted({m.split('.', 2)[-1] for run in norms.values() for m in run
                       if m.startswith('blocks.')})
    seeds = sorted({k.split('seed=')[1] for k in norms})
    stats = {  # title: a cell from one run's rows of one matrix kind
        'Spread of the row norms: 90th over 10th percentile, each layer divided by its mean, '
        'the layers pooled': lambda run, m: f'{spread(normalized(run, m)):.2f}',
        'Lowest row, decades below the median: log10(median / min), each layer divided by its '
        'mean, the layers pooled': lambda run, m: f'{decades_below_median(normalized(run, m)):.2f}',
        'Median row norm, raw (log10; the layers pooled, not normalized)':
            lambda run, m: f'{np.log10(np.median(np.concatenate(layers(run, m)))):+.2f}',
    }
    lines = ['Row norms of W = s r W~ c, per matrix kind; '
             f'each cell: seed {" / seed ".join(seeds)}.']
    for title, stat in stats.items():
        lines += ['', f'{title}.\n', '| optimizer | multipliers | ' + ' | '.join(matrices) + ' |',
                  '|---|---|' + '---|' * len(matrices)]
        for optimizer in OPTIMIZERS:
            for config in CONFIGS:
                runs = [norms[f'{optimizer}/{config}/seed={seed}'] for seed in seeds]
                cells = [' / '.join(stat(run, m) for run in runs) for m in matrices]
                lines.append(f'| {optimizer} | {config} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def plot(norms, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(OPTIMIZERS), len(SHOWN), figsize=(10, 6.5))
    first_seed = f'seed={SEEDS[0]}'
    for row, optimizer in enumerate(OPTIMIZERS):
        for col, matrix in enumerate(SHOWN):
            ax = axes[row, col]
            rows, depth = {}, 0
            for config in CONFIGS:
                run = norms.get(f'{optimizer}/{config}/{first_seed}', {})
                if layers(run, matrix):
                    rows[config] = normalized(run, matrix)
                    depth = len(layers(run, matrix))
            if not rows:
                continue
            everything = np.log10(np.concatenate(list(rows.values())))
            bins = np.linspace(everything.min(), everything.max(), 60)  # the same for both
            for i, (config, values) in enumerate(rows.items()):
                ax.hist(np.log10(values), bins=bins, alpha=0.55, color=f'C{i}',
                        label=f'{config}: 90/10 spread {spread(values):.1f}x '
                              f'({len(values)} rows, {depth} layers)')
            ax.set_title(f'{optimizer}: rows of W_{matrix.split(".")[1]}, seed {SEEDS[0]}',
                         fontsize=9)
            ax.set_xlabel('log10 (row norm of W = s r W~ c / its layer\'s mean row norm)')
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    committed_path = os.path.join(HERE, 'row_norms.json')
    committed = (read_json(committed_path, 'restore it (git checkout)')
                 if os.path.exists(committed_path) else {})
    norms = {}
    for optimizer, optimizer_flags in OPTIMIZERS.items():
        out_dir = os.path.join(HERE, optimizer)
        points = [dict(row_mult=str(c == 'lrm').lower(), col_mult=str(c == 'lrm').lower())
                  for c in CONFIGS]
        for r in run_points(out_dir, points, SEEDS[:2], RUN + optimizer_flags):
            if r['status'] == 'ok':
                config = 'lrm' if r['point']['row_mult'] == 'true' else 'none'
                key = f"{optimizer}/{config}/seed={r['seed']}"
                ckpt = os.path.join(out_dir, 'runs', r['name'], 'ckpt.pt')
                if os.path.exists(ckpt):
                    norms[key] = row_norms(ckpt)
                elif key in committed:  # a fresh clone: the checkpoints are not committed
                    norms[key] = committed[key]
                else:
                    sys.exit(f'feature_scales: {key}: neither {os.path.relpath(ckpt)} nor its '
                             f'entry in {os.path.relpath(committed_path)}; delete its record from '
                             f'{os.path.relpath(out_dir)}/results.json to train it again')
    with open(committed_path, 'w') as f:
        json.dump(norms, f)
    write_report(HERE, table(norms),
                 lambda: plot(norms, os.path.join(HERE, 'feature_scales.png')))
