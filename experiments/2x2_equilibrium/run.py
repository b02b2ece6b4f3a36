"""
The paper's 2x2 (its Table 2) at small scale: (AdamW, Muon) x (no multipliers, the paper's LRM:
row and column multipliers on every matrix, the LM head unchanged: --row_mult --col_mult), each at
its own learning rate, in equilibrium, with the paper's schedule (warmup, a long constant phase,
x8 exponential decay over the last sixth) and z-loss 1e-4.

Each configuration's LR comes from a ladder a factor sqrt(2) apart (the paper's grid), widened
until its best point has a neighbour on each side; then two more seeds at that LR. The ladder stops
where a run would last less than 3 equilibrium times sum_t lr_t * wd: below that the matrices still
remember their initialization, and the study is about runs in equilibrium. Seed 1337 tunes the LR
and is also one of the three reported seeds. The baseline has no multipliers at all, the paper's
NONE configuration (not Table 2's tuned muP FULL one).

    python experiments/2x2_equilibrium/run.py     # resumable: recorded runs are skipped

Writes <config>/results.json (one record per run), results.md and 2x2_equilibrium.png.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
import train  # noqa: E402
from experiments.sweep import mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = ['--dataset', 'shakespeare_char', '--device', 'cpu', '--n_layer', '4', '--n_head', '4',
         '--n_embd', '128', '--block_size', '64', '--batch_size', '12', '--sample_tokens', '0']
# 1000 steps, one weight decay for every matrix (the paper's global WD): at lr 1e-3, 4.3
# equilibrium times 1/(lr wd). The multipliers learn at the LR (no --mult_lr), so their reach,
# lr x sum_t factor_t = lr x 853.7, moves with the LR: 0.60 at 7.07e-4, 1.20 at 1.41e-3 (reach())
STEPS, WD = 1000, 5.0
RUN = ['--max_iters', str(STEPS), '--schedule', 'wsd', '--warmup_iters', '100', '--decay_frac',
       '0.167', '--weight_decay', str(WD), '--z_loss', '1e-4', '--eval_interval', '100',
       '--eval_iters', '20', '--log_interval', '100']
LRM = ['--row_mult', '--col_mult']
MUON = ['--optimizer', 'muon', '--muon_scale', 'match_rms_adamw']  # AdamW's lr and wd carry over
CONFIGS = {'adamw': [], 'adamw+lrm': LRM, 'muon': MUON, 'muon+lrm': MUON + LRM}
LADDER = [1e-3 * 2 ** (i / 2) for i in range(-4, 9)]  # 2.5e-4 ... 1.6e-2, sqrt(2) apart
START = (4, 5, 6)  # 1e-3, 1.4e-3, 2e-3 first
SEEDS = (1337, 1338, 1339)


def lr_point(lr, optimizer):
    point = dict(learning_rate=f'{lr:.3g}', min_lr=f'{lr / 8:.3g}')  # decay x8
    if optimizer.startswith('muon'):
        point['muon_lr'] = point['learning_rate']
    return point


def equilibrium_times(lr):
    """sum_t lr_t * wd over the run: how many times 1/(lr wd) it lasts."""
    s = train.Settings(max_iters=STEPS, schedule='wsd', warmup_iters=100, decay_frac=0.167,
                       learning_rate=lr, min_lr=lr / 8)
    return sum(lr * train.lr_factor(it, s) * WD for it in range(STEPS))


def final_losses(records, point):
    return [r['final_val_loss'] for r in records if r['point'] == point and r['status'] == 'ok']


def tune(name, flags):
    """Run the ladder around the best LR of seed 1337 until the best has both neighbours; then
    the other seeds at the best. Returns (ladder {lr: loss}, best lr, records)."""
    out_dir, rungs = os.path.join(HERE, name), list(START)
    while True:
        points = [lr_point(LADDER[i], name) for i in rungs]
        records = run_points(out_dir, points, SEEDS[:1], MODEL + RUN + flags)
        ladder = {i: min(final_losses(records, lr_point(LADDER[i], name)), default=float('inf'))
                  for i in rungs}
        best = min(ladder, key=ladder.get)
        edge = [i for i in (best - 1, best + 1) if i not in rungs and 0 <= i < len(LADDER)
                and equilibrium_times(LADDER[i]) >= 3]
        if not edge:
            break
        rungs = sorted(rungs + edge)
    records = run_points(out_dir, [lr_point(LADDER[best], name)], SEEDS, MODEL + RUN + flags)
    return {LADDER[i]: ladder[i] for i in rungs}, LADDER[best], records


def factor_sum(lr):
    """sum_t factor_t of the run's schedule at peak LR lr (the settings train.py would use)."""
    s = train.Settings(max_iters=STEPS, schedule='wsd', warmup_iters=100, decay_frac=0.167,
                       learning_rate=lr, min_lr=lr / 8)
    return sum(train.lr_factor(it, s) for it in range(STEPS))


def reach(lr):
    """How far Adam can move a multiplier over the run: about its lr (here the LR) a step."""
    return lr * factor_sum(lr)


def mult_distance(record):
    """The farthest any row or column multiplier of a run ended from its start 1; None without."""
    ends = [v for k, v in record['final'].items() if k.endswith(('_mult_min', '_mult_max'))]
    return max(abs(v - 1) for v in ends) if ends else None


def speed_limited(record):
    """Reach below twice the distance: the run measures the multipliers' speed, not the method."""
    distance = mult_distance(record)
    return distance is not None and reach(float(record['point']['learning_rate'])) < 2 * distance


def at_best(results, name):
    """{seed: record} at the configuration's best LR."""
    ladder, best, records = results[name]
    return {r['seed']: r for r in records
            if r['point'] == lr_point(best, name) and r['status'] == 'ok'}


def ladder_records(results, name):
    """{lr: seed 1337's record} along the ladder."""
    ladder, best, records = results[name]
    return {lr: r for lr in ladder for r in records
            if r['point'] == lr_point(lr, name) and r['seed'] == SEEDS[0] and r['status'] == 'ok'}


def paired(results, a, b):
    """b minus a per seed (the same data order, initial W~ and evaluation batches)."""
    first, second = at_best(results, a), at_best(results, b)
    return [second[seed]['final_val_loss'] - first[seed]['final_val_loss'] for seed in SEEDS
            if seed in first and seed in second]


def t_statistic(deltas):
    mean, std = mean_std(deltas)
    return mean / (std / len(deltas) ** 0.5)


def mark(record):
    return ' (speed-limited)' if speed_limited(record) else ''


def table(results):
    lines = [f'Seed {SEEDS[0]} tunes the LR and is one of the three reported seeds. '
             '(speed-limited): the multipliers\' reach lr x sum_t factor_t is below twice the '
             'farthest distance one of them travelled.', '',
             '| configuration | ladder, seed 1337 (LR: final val) | best LR (equilibrium times) | '
             'final val, 3 seeds (mean ± std) | per seed (1337, 1338, 1339) |',
             '|---|---|---|---|---|']
    for name, (ladder, best, records) in results.items():
        rungs = ', '.join(f'{lr:.3g}: {r["final_val_loss"]:.4f}{mark(r)}'
                          for lr, r in ladder_records(results, name).items())
        runs = at_best(results, name)
        mean, std = mean_std([r['final_val_loss'] for r in runs.values()])
        seeds = ', '.join(f"{runs[seed]['final_val_loss']:.4f}{mark(runs[seed])}"
                          for seed in SEEDS if seed in runs)
        lines.append(f'| {name} | {rungs} | {best:.3g} ({equilibrium_times(best):.1f}) | '
                     f'{mean:.4f} ± {std:.4f} | {seeds} |')
    lines += ['', 'Paired by seed; t = mean / (std / sqrt(3)), 2 degrees of freedom (|t| > 4.30 '
              'for p < 0.05, two-sided):', '',
              '| difference | 1337 (tuning), 1338, 1339 | mean ± std, 3 seeds | t | '
              'mean of 1338, 1339 |', '|---|---|---|---|---|']
    for label, a, b in (('AdamW: LRM minus none', 'adamw', 'adamw+lrm'),
                        ('Muon: LRM minus none', 'muon', 'muon+lrm'),
                        ('none: Muon minus AdamW', 'adamw', 'muon')):
        deltas = paired(results, a, b)
        mean, std = mean_std(deltas)
        lines.append(f"| {label} | {', '.join(f'{d:+.4f}' for d in deltas)} | "
                     f'{mean:+.4f} ± {std:.4f} | {t_statistic(deltas):.1f} | '
                     f'{mean_std(deltas[1:])[0]:+.4f} |')
    lines += ['', 'The multipliers (lr = the LR): reach lr x sum_t factor_t against the farthest '
              'any ended from 1:', '',
              '| configuration | LR | reach | seed: distance | 2 x distance / reach |',
              '|---|---|---|---|---|']
    for name in ('adamw+lrm', 'muon+lrm'):
        ladder, best, records = results[name]
        for lr in ladder:
            runs = sorted((r for r in records if r['point'] == lr_point(lr, name)
                           and r['status'] == 'ok'), key=lambda r: r['seed'])
            distances = ', '.join(f"{r['seed']}: {mult_distance(r):.2f}" for r in runs)
            run_lr = float(lr_point(lr, name)['learning_rate'])  # as the runs got it, 3 digits
            ratios = [2 * mult_distance(r) / reach(run_lr) for r in runs]
            flag = ' speed-limited' if max(ratios) > 1 else ''
            lines.append(f'| {name} | {lr:.3g} | {reach(run_lr):.2f} | {distances} | '
                         f"{', '.join(f'{x:.2f}' for x in ratios)}{flag} |")
    return '\n'.join(lines) + '\n'


def floor_lr():
    """The LR at which a run lasts 3 equilibrium times (equilibrium_times is linear in lr)."""
    return 3 / equilibrium_times(1.0)


def plot(results, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    fig, (ax_lr, ax_pair, ax_mult) = plt.subplots(1, 3, figsize=(16, 4.4))
    lrs = sorted({lr for ladder, _, _ in results.values() for lr in ladder})
    for i, name in enumerate(results):
        style = dict(color=f'C{i // 2}', ls='-' if 'lrm' in name else '--')
        rungs = ladder_records(results, name)
        ax_lr.plot(list(rungs), [r['final_val_loss'] for r in rungs.values()], marker='o',
                   mfc='white', label=name, **style)
        best = results[name][1]
        mean, std = mean_std([r['final_val_loss'] for r in at_best(results, name).values()])
        ax_lr.errorbar([best * 1.03], [mean], [std], marker='s', color=style['color'], capsize=3)
        for lr, r in rungs.items():
            if speed_limited(r):
                ax_lr.plot([lr], [r['final_val_loss']], 'o', ms=13, mfc='none', mec='red')
        if 'lrm' in name:
            records = results[name][2]
            for lr in results[name][0]:
                runs = [r for r in records if r['point'] == lr_point(lr, name)]
                ax_mult.plot([lr] * len(runs), [mult_distance(r) for r in runs], 'o',
                             color=style['color'], mfc='white' if len(runs) == 1 else None,
                             label=name if lr == min(results[name][0]) else None)
    floor = floor_lr()
    for ax in (ax_lr, ax_mult):
        ax.axvspan(floor / 2.5, floor, color='0.85', label='< 3 equilibrium times (not run)')
        ax.axvline(floor, color='k', lw=0.8, ls=':')
        ax.text(floor * 0.97, 0.98, f'floor {floor:.3g}:\n3 equilibrium times', fontsize=7,
                ha='right', va='top', transform=ax.get_xaxis_transform())
        ax.set_xscale('log', base=2)
        ax.set_xlim(floor / 2.5, lrs[-1] * 1.3)
        ax.set_xticks(lrs, [f'{lr:.2g}' for lr in lrs])
        ax.set_xlabel('learning rate (AdamW; Muon at match_rms_adamw scale)', fontsize=8)
    grid = [floor / 2.5 * 1.05 ** i for i in range(60) if floor / 2.5 * 1.05 ** i < lrs[-1] * 1.3]
    ax_mult.plot(grid, [reach(lr) for lr in grid], 'r-', lw=0.8, label='reach lr x sum_t factor_t')
    ax_mult.plot(grid, [reach(lr) / 2 for lr in grid], 'r:', lw=0.8,
                 label='reach / 2: above it, speed-limited')
    ax_mult.set_ylabel('farthest multiplier from 1', fontsize=8)
    ax_mult.set_title('multipliers: distance travelled vs reach (lr = the LR)', fontsize=9)
    ax_mult.legend(fontsize=7, loc='center left')
    ax_lr.set_ylabel('final val loss', fontsize=8)
    ax_lr.set_title('the LR ladders (seed 1337) and the 3-seed means', fontsize=9)
    keys = [Line2D([], [], marker='o', color='gray', mfc='white', label='open: seed 1337 alone'),
            Line2D([], [], marker='s', color='gray',
                   label='square: mean ± std of 3 seeds (best LR)'),
            Line2D([], [], marker='o', ms=11, ls='', mfc='none', mec='red',
                   label='speed-limited: reach < 2 x distance')]
    handles, _ = ax_lr.get_legend_handles_labels()
    ax_lr.legend(handles=handles + keys, fontsize=6.5, loc='lower left')
    for i, (label, a, b) in enumerate((('AdamW', 'adamw', 'adamw+lrm'),
                                        ('Muon', 'muon', 'muon+lrm'))):
        deltas = paired(results, a, b)
        ax_pair.plot(range(len(deltas)), deltas, 'o-', color=f'C{i}',
                     label=f'{label}: mean {mean_std(deltas)[0]:+.3f} ± {mean_std(deltas)[1]:.3f}')
    ax_pair.axhline(0, color='k', lw=0.8)
    ax_pair.set_xticks(range(len(SEEDS)), [f'{SEEDS[0]}\n(tuning)'] + [str(s) for s in SEEDS[1:]])
    ax_pair.set_xlabel('seed', fontsize=8)
    ax_pair.set_ylabel('final val loss, LRM minus none', fontsize=8)
    ax_pair.set_title('paired by seed, each at its best LR', fontsize=9)
    ax_pair.legend(fontsize=7)
    for ax in (ax_lr, ax_pair, ax_mult):
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == '__main__':
    results = {name: tune(name, flags) for name, flags in CONFIGS.items()}
    report = table(results)
    with open(os.path.join(HERE, 'results.md'), 'w') as f:
        f.write(report)
    print(report)
    try:
        plot(results, os.path.join(HERE, '2x2_equilibrium.png'))
    except ImportError:
        print('no figure: pip install matplotlib')
