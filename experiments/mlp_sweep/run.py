"""
The paper's MLP sweep (Sec. 3, App. B, Figs. 8-9), at small scale: move the equilibrium scale S =
sqrt(lr / wd) of W_gate, W_up and W_down alone, at fixed lr * wd, every RMSNorm gain frozen at 1, in
four configurations: Adam, Adam + a learnable scalar on each of the three matrices, Muon, Muon +
scalars (the scalars at lr 1e-2 and no weight decay, as in the paper).

    python experiments/mlp_sweep/run.py     # resumable: the runs results.json holds are skipped

Writes <config>/results.json (one record per run), results.md (the table) and mlp_sweep.png.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from experiments.sweep import mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = ['--dataset', 'shakespeare_char', '--device', 'cpu', '--n_layer', '4', '--n_head', '4',
         '--n_embd', '128', '--block_size', '64', '--batch_size', '12', '--sample_tokens', '0']
# 500 steps: warmup 50, constant, then x8 exponential decay over the last sixth (the paper's shape);
# at lr * wd = 0.012 that is 5.1 equilibrium times 1/(lr wd) of every hidden matrix
RUN = ['--max_iters', '500', '--schedule', 'wsd', '--warmup_iters', '50', '--decay_frac', '0.167',
       '--learning_rate', '2e-3', '--min_lr', '2.5e-4', '--eval_interval', '50',
       '--eval_iters', '10', '--log_interval', '50', '--freeze_gains']
ADAM = ['--matrix_lr', '2e-3', '--matrix_wd', '6']  # hidden matrices: S = 0.018, lr * wd = 0.012
MUON = ['--optimizer', 'muon', '--muon_scale', 'match_rms_adamw', '--muon_lr', '2e-3',
        '--muon_wd', '6']  # the same S: Muon's update RMS matched to AdamW's
# one scalar on each MLP matrix; lr 1e-2 x 500 steps = 5: room to compensate a factor 4 in S
SCALARS = ['--scalar_mult', '--mult_placement', 'mlp', '--mult_lr', '1e-2', '--mult_wd', '0']
CONFIGS = {'adam': ADAM, 'adam+scalars': ADAM + SCALARS,
           'muon': MUON, 'muon+scalars': MUON + SCALARS}
S_FACTORS = (0.25, 0.5, 1, 2, 4)  # S of gate, up and down relative to the rest: lr x k, wd / k
SEEDS = {0.25: (1337, 1338), 1: (1337, 1338), 4: (1337, 1338)}  # 2 seeds at the centre and ends
BASE_S = (2e-3 / 6) ** 0.5


def mlp_point(k):
    """The flags that scale S of the three MLP matrices by k at fixed lr * wd."""
    mlp = ('gate', 'up', 'down')
    return dict(lr_factors=','.join(f'{m}={k:g}' for m in mlp),
                wd_factors=','.join(f'{m}={1 / k:g}' for m in mlp))


def sweep():
    """{config: {k: [final val loss per seed]}}, and the records, running what is missing."""
    losses, records = {}, {}
    for name, flags in CONFIGS.items():
        for k in S_FACTORS:
            run_points(os.path.join(HERE, name), [mlp_point(k)], SEEDS.get(k, (1337,)),
                       MODEL + RUN + flags)
        records[name] = run_points(os.path.join(HERE, name), [])
        losses[name] = {k: [r['final_val_loss'] for r in records[name]
                            if r['point'] == mlp_point(k) and r['status'] == 'ok']
                        for k in S_FACTORS}
    return losses, records


def table(losses):
    header = '| configuration | ' + ' | '.join(f'S = {k:g} x ({BASE_S * k:.4f})'
                                               for k in S_FACTORS) + ' | spread |'
    lines = [header, '|---' * (len(S_FACTORS) + 2) + '|']
    for name, by_k in losses.items():
        cells = []
        for k in S_FACTORS:
            mean, std = mean_std(by_k[k]) or (float('nan'), 0)
            cells.append(f'{mean:.4f}' + (f' ± {std:.4f}' if len(by_k[k]) > 1 else ''))
        means = [mean_std(v)[0] for v in by_k.values() if mean_std(v)]
        lines.append(f'| {name} | ' + ' | '.join(cells) + f' | {max(means) - min(means):.4f} |')
    return '\n'.join(lines) + '\n'


def mean_over_mlp(record, key):
    """The mean of one observable over every block's gate, up and down."""
    final = record['final']
    values = [v for k, v in final.items() if '.mlp.' in k and k.endswith(key)]
    return sum(values) / len(values)


def plot(losses, records, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_rms, ax_mult) = plt.subplots(1, 3, figsize=(13, 3.6))
    for i, (name, by_k) in enumerate(losses.items()):
        ks = [k for k in S_FACTORS if by_k[k]]
        stats = [mean_std(by_k[k]) for k in ks]
        style = dict(color=f'C{i // 2}', ls='-' if 'scalars' in name else '--', marker='o')
        ax_loss.errorbar(ks, [m for m, _ in stats], [s for _, s in stats], capsize=3,
                         label=name, **style)
        first_seed = {r['name']: r for r in records[name] if r['seed'] == 1337}.values()
        by_point = {r['point']['lr_factors']: r for r in first_seed}
        rms = [mean_over_mlp(by_point[mlp_point(k)['lr_factors']], 'weight_rms') for k in ks]
        ax_rms.plot(ks, rms, **style)
        if 'scalars' in name:
            mult = [mean_over_mlp(by_point[mlp_point(k)['lr_factors']], 'scalar_mult_mean')
                    for k in ks]
            ax_mult.plot(ks, mult, **style, label=name)
    for ax, title in ((ax_loss, 'final val loss'), (ax_rms, 'RMS of W~ (MLP mean), seed 1337'),
                      (ax_mult, 'learned scalar s (MLP mean)')):
        ax.set_xscale('log', base=2)
        ax.set_xlabel('S of gate, up, down / S of the rest')
        ax.set_title(title, fontsize=9)
    ax_rms.set_yscale('log', base=2)
    ax_mult.set_yscale('log', base=2)
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    losses, records = sweep()
    with open(os.path.join(HERE, 'results.md'), 'w') as f:
        f.write(table(losses))
    print(table(losses))
    try:
        plot(losses, records, os.path.join(HERE, 'mlp_sweep.png'))
    except ImportError:
        print('no figure: pip install matplotlib')
