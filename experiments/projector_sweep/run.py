"""
The paper's projector sweep (Sec. 3, Fig. 1 top), at small scale: move the equilibrium scale S =
sqrt(lr / wd) of the LM head alone, at fixed lr * wd, over 1/16 ... 16 of the rest's, with the final
RMSNorm gain (the head's column scale) fixed to 1, one learnable scalar, or the usual learnable
vector; z-loss off (it acts on the logits). A fixed gain cannot undo the head's scale, so the logits
grow or shrink with S; a learnable gain can.

    python experiments/projector_sweep/run.py     # resumable: recorded runs are skipped

Writes results.json (one record per run), results.md and projector_sweep.png.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from experiments.sweep import mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = ['--dataset', 'shakespeare_char', '--device', 'cpu', '--n_layer', '4', '--n_head', '4',
         '--n_embd', '128', '--block_size', '64', '--batch_size', '12', '--sample_tokens', '0']
# 1000 steps, the paper's schedule; every matrix at lr * wd = 0.012: 10 equilibrium times
RUN = ['--max_iters', '1000', '--schedule', 'wsd', '--warmup_iters', '100', '--decay_frac', '0.167',
       '--learning_rate', '2e-3', '--min_lr', '2.5e-4', '--matrix_lr', '2e-3', '--matrix_wd', '6',
       '--eval_interval', '100', '--eval_iters', '10', '--log_interval', '100']
S_FACTORS = (1 / 16, 1 / 4, 1, 4, 16, 64)  # S of the head relative to the rest: lr x k, wd / k
GAINS = ('fixed', 'scalar', 'vector')
# the gains learn at 10 x 2e-3: 0.02 x 1000 steps = 20, room to undo a factor 16 in S
GAIN_LR_FACTOR = 10


def head_point(k, final_gain):
    """The head's S times k (the embedding at wd 6, like the hidden matrices), one gain mode."""
    return dict(final_gain=final_gain, lr_factors=f'head={k:g},gains={GAIN_LR_FACTOR}',
                wd_factors=f'embed=60,head={60 / k:g}')


def sweep():
    points = [head_point(k, gain) for gain in GAINS for k in S_FACTORS]
    return run_points(HERE, points, (1337,), MODEL + RUN)


def by_gain(records, key):
    """{gain mode: {k: [values over seeds]}} of a record field (or a 'final' observable)."""
    out = {}
    for gain in GAINS:
        out[gain] = {}
        for k in S_FACTORS:
            runs = [r for r in records if r['point'] == head_point(k, gain) and r['status'] == 'ok']
            out[gain][k] = [r[key] if key in r else r['final'][key] for r in runs]
    return out


def table(records):
    loss, logits = by_gain(records, 'final_val_loss'), by_gain(records, 'logits_rms')
    lines = ['| final gain | ' + ' | '.join(f'S x {k:g}' for k in S_FACTORS) + ' | spread |',
             '|---' * (len(S_FACTORS) + 2) + '|']
    for gain in GAINS:
        means = {k: mean_std(v)[0] for k, v in loss[gain].items() if mean_std(v)}
        cells = [f'{means[k]:.4f} (logits {mean_std(logits[gain][k])[0]:.2f})' if k in means
                 else '' for k in S_FACTORS]
        spread = max(means.values()) - min(means.values()) if means else float('nan')
        lines.append(f'| {gain} | ' + ' | '.join(cells) + f' | {spread:.4f} |')
    return '\n'.join(lines) + '\n'


def plot(records, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, title in zip(axes, ('final_val_loss', 'logits_rms'),
                              ('final val loss', 'RMS of the logits (first val batch)')):
        for gain, points in by_gain(records, key).items():
            ks = [k for k in S_FACTORS if points[k]]
            ax.plot(ks, [mean_std(points[k])[0] for k in ks], marker='o', label=f'gain {gain}')
        ax.set_xscale('log', base=2)
        ax.set_xlabel('S of the LM head / S of the rest')
        ax.set_title(title, fontsize=9)
    axes[1].set_yscale('log', base=2)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    records = sweep()
    with open(os.path.join(HERE, 'results.md'), 'w') as f:
        f.write(table(records))
    print(table(records))
    try:
        plot(records, os.path.join(HERE, 'projector_sweep.png'))
    except ImportError:
        print('no figure: pip install matplotlib')
