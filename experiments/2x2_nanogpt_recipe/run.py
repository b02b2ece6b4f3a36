"""
The 2x2 {AdamW, Muon} x {no multipliers, s + r + c} (paper Table 2's layout) at nanoGPT's CPU
recipe, each configuration at its own learning rate: a ladder about sqrt(2) apart on seed 1337
(widened once where the best sat at an edge), then seeds 1338 and 1339 at the best LR. These runs
last 0.11-0.29 equilibrium times 1/(lr wd) for AdamW, 1.6-3.0 for Muon's hidden matrices.
(experiments/2x2_equilibrium is the paper's 2x2 in equilibrium.)

    python experiments/2x2_nanogpt_recipe/run.py     # resumable: recorded runs are skipped

Writes <optimizer>/results.json (one record per run) and results.md, prints the table and the
paired differences, and redraws lr_2x2.png (final val loss against the LR: the ladders on seed
1337, the mean ± std of the three seeds beside each best LR).
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from experiments.plot import mult_label, plot_sweep  # noqa: E402
from experiments.sweep import mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault('OMP_NUM_THREADS', '1')  # one thread per run, as the results were made
# nanoGPT's CPU recipe (the default dataset, shakespeare_char): 2000 steps, 1.5M tokens, cosine to
# min_lr 1e-4, wd 0.1, no dropout; the RMSNorm gains and the multipliers train at --learning_rate
# (--gain_lr and --mult_lr in each grid point: at_lr below)
CPU = ['--device', 'cpu', '--n_layer', '4', '--n_head', '4', '--n_embd', '128', '--block_size',
       '64', '--batch_size', '12', '--sample_tokens', '0']
R2000 = CPU + ['--max_iters', '2000', '--eval_iters', '20', '--log_interval', '100']
MUON = R2000 + ['--optimizer', 'muon']  # the original Muon scale
NONE = dict(scalar_mult='0', row_mult='0', col_mult='0')
SRC = dict(scalar_mult='1', row_mult='1', col_mult='1')  # s + r + c on every matrix, head: s
SEEDS = (1337, 1338, 1339)
ADAMW_LRS = ('1e-3', '1.4e-3', '2e-3')
# Muon's ladder moves the AdamW groups' LR and muon_lr together
MUON_LRS = [dict(learning_rate=lr, muon_lr=muon_lr)
            for lr, muon_lr in (('7e-4', '0.014'), ('1e-3', '0.02'), ('1.4e-3', '0.028'))]


def at_lr(multipliers, lrs):
    """A grid point: the multiplier flags, the LRs, then the gains and any multipliers at
    --learning_rate, given explicitly (as these runs were made)."""
    point = {**multipliers, **lrs, 'gain_lr': lrs['learning_rate']}
    if multipliers != NONE:
        point['mult_lr'] = lrs['learning_rate']
    return point


SWEEPS = {  # out_dir: [(points, seeds, flags), ...] in the order they ran
    'adamw': [([at_lr(m, dict(learning_rate=lr)) for m in (NONE, SRC) for lr in ADAMW_LRS],
               SEEDS[:1], R2000),
              ([at_lr(NONE, dict(learning_rate='2.8e-3'))], SEEDS[:1], R2000),  # 2e-3 was an edge
              ([at_lr(NONE, dict(learning_rate='2e-3'))], SEEDS, R2000),  # 3 seeds at the best LRs
              ([at_lr(SRC, dict(learning_rate='1.4e-3'))], SEEDS, R2000)],
    'muon': [([at_lr(m, lr) for m in (NONE, SRC) for lr in MUON_LRS], SEEDS[:1], MUON),
             ([at_lr(m, MUON_LRS[0]) for m in (NONE, SRC)], SEEDS, MUON)],
}


def best_runs(records, label):
    """{seed: final val loss} at the configuration's best LR (the point run with every seed)."""
    runs = [r for r in records if mult_label(r['point']) == label and r['status'] == 'ok']
    best = next(r['point'] for r in runs if r['seed'] == SEEDS[-1])
    return best, {r['seed']: r['final_val_loss'] for r in runs if r['point'] == best}


def table(records):
    lines = ['| optimizer | multipliers | ladder, seed 1337 (LR: final val) | best LR | seeds | '
             'final val (mean ± std) | per seed (1337, 1338, 1339) |', '|---' * 7 + '|']
    for name, runs in records.items():
        lr_key = 'muon_lr' if name == 'muon' else 'learning_rate'
        for label in ('none', 's+r+c'):
            ladder = sorted(((r['point'][lr_key], r['final_val_loss']) for r in runs
                             if mult_label(r['point']) == label and r['seed'] == SEEDS[0]),
                            key=lambda rung: float(rung[0]))
            best, per_seed = best_runs(runs, label)
            mean, std = mean_std(per_seed.values())
            best_lr = ', muon_lr '.join(best[k] for k in ('learning_rate', 'muon_lr') if k in best)
            lines.append(f'| {name} | {label} | '
                         + ', '.join(f'{lr}: {loss:.3f}' for lr, loss in ladder)
                         + f' | {best_lr} | {len(per_seed)} | {mean:.3f} ± {std:.3f} | '
                         + ', '.join(f'{per_seed[s]:.3f}' for s in SEEDS) + ' |')
    return '\n'.join(lines) + '\n'


def paired(records):
    """Differences paired by seed (the same initial W~, batches and evaluation batches)."""
    best = {(name, label): best_runs(runs, label)[1]
            for name, runs in records.items() for label in ('none', 's+r+c')}
    pairs = {f'{name}: s+r+c minus none': (best[name, 's+r+c'], best[name, 'none'])
             for name in records}
    pairs['none: Muon minus AdamW'] = (best['muon', 'none'], best['adamw', 'none'])
    lines = []
    for label, (a, b) in pairs.items():
        gaps = [a[s] - b[s] for s in SEEDS]
        mean, std = mean_std(gaps)
        lines.append(f'{label}: ' + ', '.join(f'{g:+.3f}' for g in gaps)
                     + f' (mean {mean:+.3f} ± {std:.3f})')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    records = {}
    for name, parts in SWEEPS.items():
        for points, seeds, flags in parts:
            records[name] = run_points(os.path.join(HERE, name), points, seeds, flags)
    print(table(records) + '\n' + paired(records))
    try:
        plot_sweep([os.path.join(HERE, name, 'results.json') for name in SWEEPS], 'learning_rate',
                   os.path.join(HERE, 'lr_2x2.png'), seed=SEEDS[0])
    except ImportError:
        print('no figure: pip install matplotlib')
