"""
Where the multipliers go (paper App. C and C.1): the paper's LRM on every matrix (`all`: row and
column multipliers, the LM head unchanged) against the symmetry-free placement (`symmetry_free`: no
two multipliers whose product is all that matters; the paper: slightly worse) and against `all`
without the token embedding's multipliers (`no_embed`), for AdamW and Muon, 3 seeds.

Every run: --row_mult --col_mult, 1000 steps in equilibrium (recipe.py: lr 1e-3 for both optimizers,
Muon at AdamW's scale, wd 5 on every matrix: 4.27 equilibrium times; z-loss 1e-4), the multipliers
at lr 1e-2 (reach 8.5) and wd 2e-3.

    python experiments/placements/run.py     # resumable: recorded runs are skipped

Writes results.json (one record per run), results.md and placements.png.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/
from recipe import (MODEL, MUON, SEEDS, equilibrium_run, multiplier_distance,  # noqa: E402
                    paired, factor_sum, write_report)
from sweep import mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS, LR, WD, MULT_LR = 1000, 1e-3, 5.0, 1e-2
RUN = MODEL + equilibrium_run(STEPS, LR, WD, MULT_LR) + ['--row_mult', '--col_mult']
PLACEMENTS = ('all', 'symmetry_free', 'no_embed')
OPTIMIZERS = {'adamw': [], 'muon': MUON}


def config(record):
    return record['point']['mult_placement']


def speed_limited(runs):
    """Whether a multiplier went further than half its reach: then the configuration may measure
    the multipliers' speed, not where they are placed."""
    return 2 * max(map(multiplier_distance, runs)) > MULT_LR * factor_sum(RUN)


def table(results):
    reach = MULT_LR * factor_sum(RUN)
    lines = [f'Equilibrium times lr * wd * sum_t factor_t = {LR * WD * factor_sum(RUN):.2f}; '
             f"the multipliers' reach mult_lr * sum_t factor_t = {reach:.2f}.\n",
             '| optimizer | placement | final val loss, mean ± std | per seed | minus `all`, per '
             'seed | minus `all`, mean ± std | multipliers: largest abs(m - 1) (reach / 2) |',
             '|---|---|---|---|---|---|---|']
    for optimizer, records in results.items():
        for placement in PLACEMENTS:
            runs = [r for r in records if config(r) == placement and r['status'] == 'ok']
            if not runs:
                continue
            mean, std = mean_std([r['final_val_loss'] for r in runs])
            seeds = ', '.join(f"{r['final_val_loss']:.4f}" for r in runs)
            deltas = paired(records, config, 'all', placement, SEEDS)
            delta_mean, delta_std = mean_std(list(deltas.values())) or (0, 0)
            per_seed = ', '.join(f'{d:+.4f}' for d in deltas.values())
            distance = max(multiplier_distance(r) for r in runs)
            limited = ', **speed-limited**' if speed_limited(runs) else ''
            lines.append(f'| {optimizer} | {placement} | {mean:.4f} ± {std:.4f} | {seeds} | '
                         f'{per_seed if placement != "all" else "-"} | '
                         f'{f"{delta_mean:+.4f} ± {delta_std:.4f}" if placement != "all" else "-"}'
                         f' | {distance:.2f} ({reach / 2:.1f}){limited} |')
    return '\n'.join(lines) + '\n'


def plot(results, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=False)
    for ax, (optimizer, records) in zip(axes, results.items()):
        for x, placement in enumerate(PLACEMENTS):
            deltas = paired(records, config, 'all', placement, SEEDS)
            ax.scatter([x] * len(deltas), list(deltas.values()), color='C0', s=18,
                       label='one seed' if x == 1 else None)
            if deltas:
                ax.errorbar(x + 0.15, *mean_std(list(deltas.values())), fmt='o', color='C3',
                            capsize=4, label='mean ± std' if x == 1 else None)
            runs = [r for r in records if config(r) == placement and r['status'] == 'ok']
            if runs and speed_limited(runs):
                ax.annotate('speed-limited', (x, max(deltas.values(), default=0)),
                            textcoords='offset points', xytext=(-8, 0), ha='right', va='center',
                            fontsize=8, color='C3')  # left of the top point, under the title
        ax.axhline(0, color='grey', lw=0.8)
        ax.set_xticks(range(len(PLACEMENTS)), PLACEMENTS)
        ax.set_title(f'{optimizer}: final val loss minus `all`, paired by seed', fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    points = [dict(mult_placement=p) for p in PLACEMENTS]
    results = {}
    for optimizer, flags in OPTIMIZERS.items():
        results[optimizer] = run_points(os.path.join(HERE, optimizer), points, SEEDS, RUN + flags)
    write_report(HERE, table(results),
                 lambda: plot(results, os.path.join(HERE, 'placements.png')))
