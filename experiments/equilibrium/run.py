"""
The equilibrium sweep (paper Sec. 3): move S = sqrt(lr / wd) of every hidden matrix (attention
and MLP, all blocks) 16x at fixed lr * wd = 0.012, without multipliers and with them, for AdamW
with the RMSNorm gains frozen at 1 or learnable, and for Muon with them frozen. Does the loss stay
flat with multipliers while ||W~|| follows S and the multipliers carry the scale?
(experiments/mlp_sweep is the paper's own version: gate, up and down alone.)

    python experiments/equilibrium/run.py     # resumable: the runs results.json holds are skipped

Writes <sweep>/results.json (one record per run) and results.md, prints the loss tables and
redraws equilibrium.png (loss, RMS of W~ and of W = s r W~ c against S).
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from experiments.plot import mult_label, plot_equilibrium  # noqa: E402
from experiments.sweep import mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault('OMP_NUM_THREADS', '1')  # one thread per run, as the results were made
# nanoGPT's CPU recipe (the default dataset, shakespeare_char)
CPU = ['--device', 'cpu', '--n_layer', '4', '--n_head', '4', '--n_embd', '128', '--block_size',
       '64', '--batch_size', '12', '--sample_tokens', '0']
# 500 steps: warmup 50, constant, x8 exponential decay over the last 100 (--decay_frac 0.2, the
# default): at lr * wd = 0.012, 5.0 equilibrium times 1/(lr wd) of the hidden matrices.
# Embedding and head: lr 2e-3, wd 0.1; the RMSNorm gains where they learn (adamw_gains): lr 2e-3
# (--gain_lr), no wd. Multipliers: lr 1e-2 (the paper's scalar LR in its MLP sweep), wd 2e-3 (the
# default, rule 1); lr 1e-2 x 417 full-LR steps: they can move by about 4.
EQ = CPU + ['--max_iters', '500', '--schedule', 'wsd', '--warmup_iters', '50',
            '--learning_rate', '2e-3', '--min_lr', '2.5e-4', '--gain_lr', '2e-3',
            '--mult_lr', '1e-2', '--eval_interval', '25', '--eval_iters', '10',
            '--log_interval', '25']
ADAMW_FROZEN = EQ + ['--freeze_gains', '--final_gain', 'fixed']  # every RMSNorm gain at 1
MUON = ADAMW_FROZEN + ['--optimizer', 'muon', '--muon_scale', 'match_rms_adamw']  # AdamW's RMS
S = [('5e-4', '24'), ('1e-3', '12'), ('2e-3', '6'), ('4e-3', '3'), ('8e-3', '1.5')]  # (lr, wd)
NONE = dict(scalar_mult='0', row_mult='0', col_mult='0')
SRC = dict(scalar_mult='1', row_mult='1', col_mult='1')  # s + r + c on every matrix; head: s
SCALAR = dict(scalar_mult='1', row_mult='0', col_mult='0')
SEEDS = (1337, 1338)


def grid(multipliers, prefix, pairs):
    """Every multiplier setting x every (lr, wd) pair of the hidden matrices (matrix_ or muon_)."""
    return [{**m, f'{prefix}_lr': lr, f'{prefix}_wd': wd} for m in multipliers for lr, wd in pairs]


SWEEPS = {  # out_dir: [(points, seeds, flags), ...]
    'adamw_frozen': [(grid([NONE, SRC, SCALAR], 'matrix', S), SEEDS, ADAMW_FROZEN)],
    'adamw_gains': [(grid([NONE, SRC], 'matrix', S), SEEDS, EQ)],
    'muon_frozen': [(grid([NONE, SRC], 'muon', S[2:3]), SEEDS, MUON),  # 2 seeds at the middle S
                    (grid([NONE, SRC], 'muon', S[::4]), SEEDS[:1], MUON)],  # 1 seed at the ends
}


def sweep():
    """{sweep: every record of its results.json}, running what is missing."""
    records = {}
    for name, parts in SWEEPS.items():
        for points, seeds, flags in parts:
            records[name] = run_points(os.path.join(HERE, name), points, seeds, flags)
    return records


def table(records):
    """Final val loss, one row per multiplier setting, one column per S: mean ± std over seeds."""
    runs = [r for r in records if r['status'] == 'ok']
    prefix = 'muon' if 'muon_lr' in runs[0]['point'] else 'matrix'
    pairs = sorted({(r['point'][f'{prefix}_lr'], r['point'][f'{prefix}_wd']) for r in runs},
                   key=lambda p: float(p[0]))
    labels = list(dict.fromkeys(mult_label(r['point']) for r in runs))
    lines = ['| multipliers | ' + ' | '.join(f'S = {(float(lr) / float(wd)) ** 0.5:.4f} '
                                           f'(lr {float(lr):g}, wd {wd})' for lr, wd in pairs)
             + ' |', '|---' * (len(pairs) + 1) + '|']
    for label in labels:
        cells = []
        for lr, wd in pairs:
            losses = [r['final_val_loss'] for r in runs if mult_label(r['point']) == label
                      and (r['point'][f'{prefix}_lr'], r['point'][f'{prefix}_wd']) == (lr, wd)]
            mean, std = mean_std(losses)
            cells.append(f'{mean:.3f} ± {std:.3f}' if len(losses) > 1 else f'{mean:.3f} (1 seed)')
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    records = sweep()
    for name, sweep_records in records.items():
        print(f'{name}: final val loss\n{table(sweep_records)}')
    try:
        plot_equilibrium([os.path.join(HERE, name, 'results.json') for name in SWEEPS],
                         os.path.join(HERE, 'equilibrium.png'))
    except ImportError:
        print('no figure: pip install matplotlib')
