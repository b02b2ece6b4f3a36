"""
Width scaling (paper Sec. 4.2, Figs. 5 and 10): at one lr and wd for every width, the matrices'
equilibrium norms should stay about constant, the logits' and the blocks' output scales stable, and
the learned scalar multipliers shrink with width, about as d^-1 for the LM head's and d^-2 for the
product of Q's and K's (slightly slower than muP predicts). Widths 64, 128, 256 and 512 (head size
32, so 2 ... 16 heads), a learnable scalar on every matrix (--scalar_mult), every RMSNorm gain
frozen (the paper's), AdamW, one seed.

Every run: 4 layers, 1000 steps in equilibrium (recipe.py: lr 1e-3, wd 5 on every matrix: 4.27
equilibrium times; z-loss 1e-4), the scalars at lr 5e-2 (reach 43) and wd 2e-3.

    python experiments/width/run.py     # resumable: recorded runs are skipped

Writes results.json (one record per run), results.md and width.png.
"""
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/
from recipe import MODEL, SEEDS, equilibrium_run, factor_sum, write_report  # noqa: E402
from sweep import run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS, LR, WD, MULT_LR = 1000, 1e-3, 5.0, 5e-2
WIDTHS = (64, 128, 256, 512)
RUN = (MODEL + equilibrium_run(STEPS, LR, WD, MULT_LR)
       + ['--scalar_mult', '--freeze_gains', '--final_gain', 'fixed', '--eval_iters', '10'])
KINDS = ('attn.q', 'attn.k', 'attn.v', 'attn.o', 'mlp.gate', 'mlp.up', 'mlp.down')


def geometric_mean(values):
    return math.exp(sum(math.log(abs(v)) for v in values) / len(values))


def measures(record):
    """What the paper plots against width, from a run's final evaluation line."""
    f, layers = record['final'], range(4)
    out = {f'W~ RMS, {kind}': geometric_mean([f[f'blocks.{i}.{kind}.weight_rms'] for i in layers])
           for kind in KINDS}
    out['W~ RMS, embed'], out['W~ RMS, head'] = f['embed.weight_rms'], f['head.weight_rms']
    out['logits RMS'] = f['logits_rms']
    out['block output RMS'] = geometric_mean([f[f'blocks.{i}.output_rms'] for i in layers])
    out['head scalar'] = f['head.scalar_mult_mean']
    out['Q K scalar product'] = geometric_mean(
        [f[f'blocks.{i}.attn.q.scalar_mult_mean'] * f[f'blocks.{i}.attn.k.scalar_mult_mean']
         for i in layers])
    out['embed scalar'] = f['embed.scalar_mult_mean']
    return out


def largest_scalar_move(record):
    f = record['final']
    return max(abs(v - 1) for k, v in f.items() if k.endswith('scalar_mult_mean'))


def table(records):
    rows = {int(r['point']['n_embd']): r for r in records if r['status'] == 'ok'}
    names = list(measures(next(iter(rows.values()))))
    lines = [f'Equilibrium times {LR * WD * factor_sum(RUN):.2f}; the scalars\' reach '
             f'{MULT_LR * factor_sum(RUN):.1f} (twice the largest move must stay below it).\n',
             '| width | final val loss | largest abs(s - 1) | ' + ' | '.join(names) + ' |',
             '|---|---|---|' + '---|' * len(names)]
    for width, r in sorted(rows.items()):
        m = measures(r)
        lines.append(f"| {width} | {r['final_val_loss']:.4f} | {largest_scalar_move(r):.2f} | "
                     + ' | '.join(f'{m[n]:.4g}' for n in names) + ' |')
    return '\n'.join(lines) + '\n'


def plot(records, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = sorted((int(r['point']['n_embd']), measures(r)) for r in records
                  if r['status'] == 'ok')
    widths = [w for w, _ in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [('matrix norms (geometric mean over layers)', [n for n in rows[0][1]
                                                            if n.startswith('W~')]),
              ('activations', ['logits RMS', 'block output RMS']),
              ('learned scalars', ['head scalar', 'Q K scalar product', 'embed scalar'])]
    for ax, (title, names) in zip(axes, panels):
        for name in names:
            ax.plot(widths, [m[name] for _, m in rows], marker='o', mfc='white', label=name)
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.set_title(title, fontsize=9)
        ax.set_xlabel('width d')
    # guides from the first width: d^-1 through the head scalar, d^-2 through the Q K product
    for power, style in ((-1, ':'), (-2, '-.')):
        head = rows[0][1]['head scalar'] if power == -1 else rows[0][1]['Q K scalar product']
        axes[2].plot(widths, [head * (w / widths[0]) ** power for w in widths], 'k' + style,
                     lw=0.8, label=f'd^{power}')
    axes[0].set_ylim(top=axes[0].get_ylim()[1] * 2)  # room for the legend above the head's norm
    axes[0].legend(fontsize=6, ncol=3, loc='upper center')
    for ax in axes[1:]:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    points = [dict(n_embd=str(w), n_head=str(w // 32)) for w in WIDTHS]
    records = run_points(HERE, points, SEEDS[:1], RUN)
    write_report(HERE, table(records),
                 lambda: plot(records, os.path.join(HERE, 'width.png')))
