"""
Rule 3 (paper Sec. 2): no log-scale parametrization of the multipliers; m = exp(rho) brings, by the
paper's account, at most a slight gain and stability problems. The paper's LRM (--row_mult
--col_mult) with plain multipliers against the same with --mult_param log (each multiplier
m = exp(rho), rho the parameter), AdamW and Muon. A log-scale step is another step, so each of the
four configurations gets its own multiplier LR, from a short ladder on a tuning seed (1336) that is
not among the 3 reported seeds.

Every run: the recipe of experiments/placements (1000 steps in equilibrium, lr 1e-3, wd 5 on every
matrix, z-loss 1e-4; multipliers' wd 2e-3), a step line every 10 steps. Everything the report reads
is in the committed <optimizer>/results.json records: the run folders (runs/) are not needed.

    python experiments/log_scale/run.py     # resumable: recorded runs are skipped

Writes <optimizer>/results.json (one record per run), results.md and log_scale.png.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/
from recipe import (MODEL, MUON, SEEDS, equilibrium_run, factor_sum,  # noqa: E402
                    write_report)
from sweep import mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS, LR, WD = 1000, 1e-3, 5.0
TUNING_SEED = 1336
LADDER = ('1e-3', '3e-3', '1e-2', '3e-2', '1e-1', '3e-1')  # a factor of about 3 apart
START = (1, 2, 3)  # 3e-3, 1e-2, 3e-2 first; widened until the best has a neighbour on each side


def run_flags(optimizer):
    flags = MODEL + equilibrium_run(STEPS, LR, WD, 1e-2, log_interval=10) + ['--row_mult',
                                                                             '--col_mult']
    return flags + (MUON if optimizer == 'muon' else [])


def name(record):
    return 'log' if record['point']['mult_param'] == 'log' else 'linear'


def multiplier_range(record):
    """The smallest and largest multiplier m at the end, over every matrix."""
    final = record['final']
    return (min(v for k, v in final.items() if k.endswith('_mult_min')),
            max(v for k, v in final.items() if k.endswith('_mult_max')))


def tune(optimizer, mult_param):
    """The multiplier LR with the lowest final val loss on the tuning seed, from a ladder widened
    until that LR has a neighbour on each side. Returns ({mult_lr: loss}, the best mult_lr)."""
    out_dir, rungs = os.path.join(HERE, optimizer), list(START)
    while True:
        points = [dict(mult_param=mult_param, mult_lr=LADDER[i]) for i in rungs]
        records = run_points(out_dir, points, (TUNING_SEED,), run_flags(optimizer))
        ladder = {i: r['final_val_loss'] for r in records for i in rungs
                  if r['point'] == points[rungs.index(i)] and r['seed'] == TUNING_SEED
                  and r['status'] == 'ok'}
        best = min(ladder, key=ladder.get)
        edge = [i for i in (best - 1, best + 1) if i not in rungs and 0 <= i < len(LADDER)]
        if not edge:
            return {LADDER[i]: ladder[i] for i in sorted(ladder)}, LADDER[best]
        rungs = sorted(rungs + edge)


def table(results):
    total = factor_sum(run_flags('adamw'))  # the same schedule for every run
    lines = ['Reach of a multiplier, mult_lr * sum_t factor_t: '
             + ', '.join(f'{float(lr) * total:.1f} at {lr}' for lr in LADDER)
             + ' (in rho = log m under --mult_param log); matrices: '
             f'{LR * WD * total:.2f} equilibrium times.\n',
             '| optimizer | multipliers | ladder, seed 1336 (mult_lr: final val) | mult_lr | '
             'final val loss, 3 seeds (mean ± std) | per seed | multipliers min ... max |',
             '|---|---|---|---|---|---|---|']
    for (optimizer, kind), (ladder, best, runs) in results.items():
        mean, std = mean_std([r['final_val_loss'] for r in runs]) or (float('nan'), 0)
        low = min(multiplier_range(r)[0] for r in runs)
        high = max(multiplier_range(r)[1] for r in runs)
        rungs = ', '.join(f'{lr}: {loss:.4f}' for lr, loss in ladder.items())
        seeds = ', '.join(f"{r['final_val_loss']:.4f}" for r in runs)
        lines.append(f'| {optimizer} | {kind} | {rungs} | {best} | {mean:.4f} ± {std:.4f} | '
                     f'{seeds} | {low:.3f} ... {high:.2f} |')
    for optimizer in ('adamw', 'muon'):
        linear, log = (results.get((optimizer, k)) for k in ('linear', 'log'))
        if linear and log:
            by_seed = [{r['seed']: r['final_val_loss'] for r in x[2]} for x in (linear, log)]
            deltas = [by_seed[1][s] - by_seed[0][s] for s in SEEDS
                      if s in by_seed[0] and s in by_seed[1]]
            mean, std = mean_std(deltas)
            t = mean / (std / len(deltas) ** 0.5) if std else float('nan')  # paired, n - 1 dof
            lines.append(f'\n{optimizer}: log minus linear, per seed: '
                         + ', '.join(f'{d:+.4f}' for d in deltas)
                         + f' (mean {mean:+.4f} ± {std:.4f}, t = {t:+.2f})')
    return '\n'.join(lines) + '\n'


def plot(results, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, ((optimizer, kind), (ladder, best, runs)) in enumerate(results.items()):
        style = dict(color=f'C{i // 2}', ls='-' if kind == 'linear' else '--', marker='o')
        axes[0].plot([float(lr) for lr in ladder], list(ladder.values()), mfc='white',
                     label=f'{optimizer}, {kind}', **style)  # open: one seed
        axes[0].plot(float(best), ladder[best], '*', ms=11, color=f'C{i // 2}',
                     label='the chosen LR' if i == len(results) - 1 else None)
        axes[1].scatter([i] * len(runs), [r['final_val_loss'] for r in runs], color=f'C{i // 2}',
                        marker='o' if kind == 'linear' else 'x')
    axes[0].set_xscale('log')
    rungs = sorted({float(lr) for ladder, *_ in results.values() for lr in ladder})
    axes[0].set_xticks(rungs, [f'{lr:g}' for lr in rungs])
    axes[0].minorticks_off()
    axes[0].set_xlabel("multipliers' LR (tuning seed 1336)")
    axes[0].set_ylabel('final val loss')
    axes[0].legend(fontsize=8)
    axes[1].set_xticks(range(len(results)), [f'{o}\n{k}\nmult_lr {r[1]}'
                                              for (o, k), r in results.items()], fontsize=8)
    axes[1].set_title('final val loss at each chosen LR, seeds 1340-1342 (one point each)',
                      fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    results = {}
    for optimizer in ('adamw', 'muon'):
        for mult_param, kind in (('plain', 'linear'), ('log', 'log')):
            ladder, best = tune(optimizer, mult_param)
            out_dir = os.path.join(HERE, optimizer)
            records = run_points(out_dir, [dict(mult_param=mult_param, mult_lr=best)], SEEDS,
                                 run_flags(optimizer))
            runs = [r for r in records if r['point'] == dict(mult_param=mult_param, mult_lr=best)
                    and r['seed'] in SEEDS and r['status'] == 'ok']
            results[optimizer, kind] = (ladder, best, runs)
    write_report(HERE, table(results),
                 lambda: plot(results, os.path.join(HERE, 'log_scale.png')))
