"""
The paper's 2x2 (its Table 2) at small scale: (AdamW, Muon) x (no multipliers, the paper's LRM:
row and column multipliers on every matrix, the LM head unchanged: --row_mult --col_mult), each at
its own learning rate, in equilibrium, with the paper's schedule (warmup, a long constant phase,
x8 exponential decay over the last sixth) and z-loss 1e-4.

Each configuration's LR comes from a ladder a factor sqrt(2) apart (the paper's grid), widened
until its best point has a neighbour on each side; then two more seeds at that LR. The ladder stops
where a run would last less than 3 equilibrium times sum_t lr_t * wd: below that the matrices still
remember their initialization, and the study is about runs in equilibrium.

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
# equilibrium times 1/(lr wd)
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


def table(results):
    lines = ['| configuration | ladder, seed 1337 (LR: final val) | best LR (equilibrium times) | '
             'final val, 3 seeds (mean ± std) | per seed |', '|---|---|---|---|---|']
    for name, (ladder, best, records) in results.items():
        rungs = ', '.join(f'{lr:.3g}: {loss:.4f}' for lr, loss in ladder.items())
        per_seed = [r['final_val_loss'] for r in records
                    if r['point'] == lr_point(best, name) and r['status'] == 'ok']
        mean, std = mean_std(per_seed)
        seeds = ', '.join(f'{v:.4f}' for v in per_seed)
        lines.append(f'| {name} | {rungs} | {best:.3g} ({equilibrium_times(best):.1f}) | '
                     f'{mean:.4f} ± {std:.4f} | {seeds} |')
    return '\n'.join(lines) + '\n'


def paired_gains(results):
    """LRM minus none, per seed (the same data order and initial W~ in each pair)."""
    gains = {}
    for optimizer in ('adamw', 'muon'):
        by_seed = []
        for name in (optimizer, f'{optimizer}+lrm'):
            ladder, best, records = results[name]
            by_seed.append({r['seed']: r['final_val_loss'] for r in records
                            if r['point'] == lr_point(best, name) and r['status'] == 'ok'})
        gains[optimizer] = [by_seed[1][seed] - by_seed[0][seed] for seed in SEEDS
                            if seed in by_seed[0] and seed in by_seed[1]]
    return gains


def plot(results, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (name, (ladder, best, records)) in enumerate(results.items()):
        style = dict(color=f'C{i // 2}', ls='-' if 'lrm' in name else '--', marker='o')
        ax.plot(list(ladder), list(ladder.values()), label=name, **style)
    ax.set_xscale('log', base=2)
    ax.set_xlabel('learning rate (AdamW; Muon at match_rms_adamw scale)')
    ax.set_ylabel('final val loss, seed 1337')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    results = {name: tune(name, flags) for name, flags in CONFIGS.items()}
    report = table(results) + ''.join(
        f"\n{o}: LRM minus none, per seed: {', '.join(f'{g:+.4f}' for g in gains)}\n"
        for o, gains in paired_gains(results).items())
    with open(os.path.join(HERE, 'results.md'), 'w') as f:
        f.write(report)
    print(report)
    try:
        plot(results, os.path.join(HERE, '2x2_equilibrium.png'))
    except ImportError:
        print('no figure: pip install matplotlib')
