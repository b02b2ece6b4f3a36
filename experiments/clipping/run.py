"""
The clipping rule (paper Sec. 4.3, Fig. 6, rule 2): the multipliers excluded from the global
gradient-norm clipping (the default) or included (--clip_multipliers), at nanoGPT's CPU recipe with
s + r + c (--scalar_mult --row_mult --col_mult), 2 seeds. The paper: included, the multipliers'
large early gradients dominate the norm and every update shrinks; excluded is better.

    python experiments/clipping/run.py     # resumable: the runs results.json holds are skipped

Writes results.json (one record per run) and results.md, prints the table of final val losses, and
redraws clipping.png (early pre-clip gradient norms, the val-loss gap over training; the plotted
numbers in clipping.json) from the runs' log.jsonl.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from experiments.plot import plot_clipping  # noqa: E402
from experiments.sweep import mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault('OMP_NUM_THREADS', '1')  # one thread per run, as the results were made
# nanoGPT's CPU recipe (the default dataset, shakespeare_char)
CPU = ['--device', 'cpu', '--n_layer', '4', '--n_head', '4', '--n_embd', '128', '--block_size',
       '64', '--batch_size', '12', '--sample_tokens', '0']
# 2000 steps, cosine from 1e-3 to 1e-4, clip 1.0 (the defaults), the RMSNorm gains and the
# multipliers at that lr 1e-3 too; a gradient-norm line every 5 steps
CLIPPING = CPU + ['--max_iters', '2000', '--eval_interval', '100', '--eval_iters', '20',
                  '--log_interval', '5', '--gain_lr', '1e-3', '--mult_lr', '1e-3',
                  '--scalar_mult', '--row_mult', '--col_mult']
POINTS = [dict(clip_multipliers='0'), dict(clip_multipliers='1')]  # excluded (rule 2), included
SEEDS = (1337, 1338)


def table(records):
    """Final val loss per seed, excluded and included, and their paired difference."""
    final = {(r['point']['clip_multipliers'], r['seed']): r['final_val_loss']
             for r in records if r['status'] == 'ok'}
    lines = ['| multipliers in the clipping | ' + ' | '.join(f'seed {s}' for s in SEEDS)
             + ' | mean ± std |', '|---' * (len(SEEDS) + 2) + '|']
    for value, label in (('0', 'excluded (rule 2)'), ('1', 'included')):
        losses = [final[value, s] for s in SEEDS]
        mean, std = mean_std(losses)
        lines.append(f'| {label} | ' + ' | '.join(f'{v:.4f}' for v in losses)
                     + f' | {mean:.3f} ± {std:.3f} |')
    gaps = [final['1', s] - final['0', s] for s in SEEDS]
    lines.append('| included minus excluded | ' + ' | '.join(f'{g:+.4f}' for g in gaps)
                 + f' | {mean_std(gaps)[0]:+.4f} |')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    records = run_points(HERE, POINTS, SEEDS, CLIPPING)
    print(table(records))
    logs = [os.path.join(HERE, 'runs', r['name'], 'log.jsonl') for r in records]
    if not all(map(os.path.exists, logs)):
        print('clipping.png: the committed figure stands; redrawing it needs the runs/ folders '
              '(not committed): move results.json aside and run this again (4 runs, ~5 min each)')
        sys.exit(0)
    try:
        plot_clipping(HERE, os.path.join(HERE, 'clipping.png'))
    except ImportError:
        print('no figure: pip install matplotlib')
