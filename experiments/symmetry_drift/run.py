"""
Symmetry drift (paper Sec. 4.1, Fig. 4), the reason for rule 1: with row multipliers on both W_Q and
W_K only their product reaches the attention logits, so their ratio is free to wander; a scale that
feeds only into an RMSNorm (the residual branches) is free to grow. Without weight decay on the
multipliers nothing holds them; a light one (2e-3) should. The paper saw it in bfloat16.

The same run, the paper's LRM (--row_mult --col_mult), with the multipliers' weight decay 0 and
2e-3, in float32 and under bfloat16 autocast; log.jsonl has the spread of Q's over K's row scales
per layer (qk_ratio_min/max), the RMS of each residual branch's effective matrix (W_O, W_down) and
of each block's output.

    python experiments/symmetry_drift/run.py     # resumable: recorded runs are skipped

Writes results.json (one record per run), trajectories.json (the plotted numbers),
results.md and symmetry_drift.png.
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from experiments.sweep import run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = ['--dataset', 'shakespeare_char', '--device', 'cpu', '--n_layer', '4', '--n_head', '4',
         '--n_embd', '128', '--block_size', '64', '--batch_size', '12', '--sample_tokens', '0']
# 3000 steps, the paper's schedule, hidden matrices at lr * wd = 0.012 (30 equilibrium times);
# the multipliers at lr 1e-2: 30 units of Adam steps, room to drift
RUN = ['--max_iters', '3000', '--schedule', 'wsd', '--warmup_iters', '100', '--decay_frac', '0.167',
       '--learning_rate', '2e-3', '--min_lr', '2.5e-4', '--matrix_lr', '2e-3', '--matrix_wd', '6',
       '--eval_interval', '100', '--eval_iters', '10', '--log_interval', '100',
       '--row_mult', '--col_mult', '--mult_lr', '1e-2']
POINTS = [dict(dtype=dtype, mult_wd=wd)
          for dtype in ('float32', 'bfloat16') for wd in ('0', '2e-3')]
# 2e-3 x lr 1e-2 x 2660 full-LR steps = 0.05: too weak to act within this run; 0.1 gives 2.7
POINTS.append(dict(dtype='float32', mult_wd='0.1'))
WATCHED = ('attn.qk_ratio_min', 'attn.qk_ratio_max', 'attn.o.effective_rms',
           'mlp.down.effective_rms', 'output_rms')


def trajectories(records):
    """{run name: {'iter': [...], 'val_loss': [...], observable: [...]}} from each run's log."""
    out = {}
    for r in records:
        with open(os.path.join(HERE, 'runs', r['name'], 'log.jsonl')) as f:
            evals = [line for line in map(json.loads, f) if 'val_loss' in line]
        keys = [k for k in evals[-1] if any(k.endswith(w) for w in WATCHED)]
        out[r['name']] = {k: [e[k] for e in evals] for k in ['iter', 'val_loss'] + keys}
    return out


def drift(track, layer):
    """Max over min of Q's over K's row scales in a layer, at the end: 1 = no spread."""
    return track[f'blocks.{layer}.attn.qk_ratio_max'][-1] / \
        track[f'blocks.{layer}.attn.qk_ratio_min'][-1]


def table(records, tracks):
    lines = ['| dtype | multiplier wd | final val loss | Q/K ratio spread per layer (max/min) | '
             'Q/K ratio range, all layers | RMS of W_O, W_down (last layer) |',
             '|---|---|---|---|---|---|']
    for r in records:
        t = tracks[r['name']]
        layers = sorted({int(k.split('.')[1]) for k in t if k.startswith('blocks.')})
        spreads = ', '.join(f'{drift(t, i):.2f}' for i in layers)
        low = min(t[f'blocks.{i}.attn.qk_ratio_min'][-1] for i in layers)
        high = max(t[f'blocks.{i}.attn.qk_ratio_max'][-1] for i in layers)
        last = layers[-1]
        branches = (f"{t[f'blocks.{last}.attn.o.effective_rms'][-1]:.4f}, "
                    f"{t[f'blocks.{last}.mlp.down.effective_rms'][-1]:.4f}")
        lines.append(f"| {r['point']['dtype']} | {r['point']['mult_wd']} | "
                     f"{r['final_val_loss']:.4f} | {spreads} | {low:.3f} ... {high:.3f} | "
                     f'{branches} |')
    return '\n'.join(lines) + '\n'


def plot(tracks, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for i, (name, t) in enumerate(tracks.items()):
        style = dict(color=f'C{i}', label=name.replace(',seed=1337', ''))
        layers = sorted({int(k.split('.')[1]) for k in t if k.startswith('blocks.')})
        spread = [max(t[f'blocks.{j}.attn.qk_ratio_max'][n] / t[f'blocks.{j}.attn.qk_ratio_min'][n]
                      for j in layers) for n in range(len(t['iter']))]
        axes[0].plot(t['iter'], spread, **style)
        branch = [sum(t[f'blocks.{j}.{b}.effective_rms'][n] for j in layers
                      for b in ('attn.o', 'mlp.down')) / (2 * len(layers))
                  for n in range(len(t['iter']))]
        axes[1].plot(t['iter'], branch, **style)
        axes[2].plot(t['iter'], t['val_loss'], **style)
    titles = ('Q/K row-scale ratio: max/min, worst layer', 'RMS of W_O and W_down (mean)',
              'val loss')
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel('iter')
    axes[0].set_yscale('log')
    axes[2].set_ylim(top=2.6)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    records = [r for r in run_points(HERE, POINTS, (1337,), MODEL + RUN) if r['status'] == 'ok']
    tracks = trajectories(records)
    with open(os.path.join(HERE, 'trajectories.json'), 'w') as f:
        json.dump(tracks, f)
    with open(os.path.join(HERE, 'results.md'), 'w') as f:
        f.write(table(records, tracks))
    print(table(records, tracks))
    try:
        plot(tracks, os.path.join(HERE, 'symmetry_drift.png'))
    except ImportError:
        print('no figure: pip install matplotlib')
