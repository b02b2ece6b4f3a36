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
results.md and feature_scales.png.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from model import GPT, GPTConfig  # noqa: E402
from recipe import MODEL, MUON, SEEDS, equilibrium_run, write_report  # noqa: E402
from sweep import mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = MODEL + equilibrium_run(1000, 1e-3, 5.0, 1e-2)
CONFIGS = {'none': [], 'lrm': ['--row_mult', '--col_mult']}
OPTIMIZERS = {'adamw': [], 'muon': MUON}
SHOWN = ('attn.q', 'mlp.gate')  # the paper's Fig. 3


def row_norms(ckpt_path):
    """{matrix name: the L2 norm of each row of its effective W} of a checkpoint's model."""
    ckpt = torch.load(ckpt_path, weights_only=True)
    model = GPT(GPTConfig(**ckpt['model_config']))
    model.load_state_dict(ckpt['model'])
    with torch.no_grad():
        return {name: m.effective_weight().norm(dim=1).tolist()
                for name, m in model.matrix_layers().items()}


def spread(norms):
    """The width of a row-norm distribution: the 90th over the 10th percentile."""
    low, high = np.percentile(norms, [10, 90])
    return float(high / low)


def table(norms):
    matrices = sorted({m.split('.', 2)[-1] for run in norms.values() for m in run
                       if m.startswith('blocks.')})
    lines = ['Spread of the row norms of W = s r W~ c: 90th over 10th percentile, per matrix kind '
             '(mean ± std over the layers and seeds).\n',
             '| optimizer | multipliers | ' + ' | '.join(matrices) + ' |',
             '|---|---|' + '---|' * len(matrices)]
    for optimizer in OPTIMIZERS:
        for config in CONFIGS:
            runs = [v for k, v in norms.items() if k.startswith(f'{optimizer}/{config}/')]
            cells = []
            for matrix in matrices:
                values = [spread(run[m]) for run in runs for m in run if m.endswith(matrix)
                          and m.startswith('blocks.')]
                mean, std = mean_std(values) or (float('nan'), 0)
                cells.append(f'{mean:.2f} ± {std:.2f}')
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
            logs = {}
            for config in CONFIGS:
                run = norms.get(f'{optimizer}/{config}/{first_seed}', {})
                values = [v for m in run if m.endswith(matrix) for v in run[m]]
                if values:
                    logs[config] = np.log10(values)
            if not logs:
                continue
            everything = np.concatenate(list(logs.values()))
            bins = np.linspace(everything.min(), everything.max(), 60)  # the same for both
            for i, (config, values) in enumerate(logs.items()):
                ax.hist(values, bins=bins, alpha=0.55, color=f'C{i}',
                        label=f'{config} ({len(values)} rows, all layers)')
            ax.set_title(f'{optimizer}: rows of W_{matrix.split(".")[1]}, seed {SEEDS[0]}',
                         fontsize=9)
            ax.set_xlabel('log10 row norm of W = s r W~ c')
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    norms = {}
    for optimizer, optimizer_flags in OPTIMIZERS.items():
        out_dir = os.path.join(HERE, optimizer)
        points = [dict(row_mult=str(c == 'lrm').lower(), col_mult=str(c == 'lrm').lower())
                  for c in CONFIGS]
        for r in run_points(out_dir, points, SEEDS[:2], RUN + optimizer_flags):
            if r['status'] == 'ok':
                config = 'lrm' if r['point']['row_mult'] == 'true' else 'none'
                ckpt = os.path.join(out_dir, 'runs', r['name'], 'ckpt.pt')
                norms[f"{optimizer}/{config}/seed={r['seed']}"] = row_norms(ckpt)
    with open(os.path.join(HERE, 'row_norms.json'), 'w') as f:
        json.dump(norms, f)
    write_report(HERE, table(norms),
                 lambda: plot(norms, os.path.join(HERE, 'feature_scales.png')))
