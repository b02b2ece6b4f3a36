"""
Adam Brownian motion (paper Sec. 3, Fig. 1): is the norm of each matrix set by lr and wd rather
than by the data? abm.py feeds i.i.d. N(0, 1) "gradients" through the same parameter groups,
optimizer, clipping and LR schedule as a finished run and compares each W~'s RMS with the real
run's. Four runs of the equilibrium study (experiments/equilibrium), all with s + r + c, seed 1337:
AdamW and Muon (gains frozen), each at the strongest weight decay of its sweep (S = 0.0046, wd 24)
and the weakest (S = 0.073, wd 1.5).

    python experiments/abm/run.py

abm.py needs the runs' ckpt.pt and log.jsonl, which are not committed: this script first runs the
equilibrium recipe for those four points (skipped where results.json records them), then redraws
abm.png, with the plotted numbers in abm.json, and prints the table: each matrix's final RMS of
W~, noise twin / real run, and Q's scalar multiplier at the end, real and noise.
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from experiments.abm import abm  # noqa: E402
from experiments.equilibrium import run as equilibrium  # noqa: E402
from experiments.sweep import run_name, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EQUILIBRIUM = equilibrium.HERE  # where the equilibrium sweeps keep results.json and runs/
SEED = 1337
ENDS = equilibrium.S[::4]  # (lr, wd) = (5e-4, 24) and (8e-3, 1.5): S = 0.0046 and 0.073
RUNS = [  # (the equilibrium sweep, its lr/wd flag prefix, its flags), with s + r + c
    ('adamw_frozen', 'matrix', equilibrium.ADAMW_FROZEN),
    ('muon_frozen', 'muon', equilibrium.MUON),
]


def run_dirs():
    """The four runs' folders, training any whose record is missing."""
    dirs = []
    for sweep, prefix, flags in RUNS:
        out_dir = os.path.join(EQUILIBRIUM, sweep)
        points = equilibrium.grid([equilibrium.SRC], prefix, ENDS)
        run_points(out_dir, points, (SEED,), flags)
        dirs += [os.path.join(out_dir, 'runs', run_name(point, SEED)) for point in points]
    return dirs


def table(results):
    """One row per run: final noise / real RMS of each W~, then Q's scalar (real, noise)."""
    rms = [k for k in results[0]['real'] if k.endswith('.weight_rms')]
    q_scalar = next(k for k in results[0]['real'] if k.endswith('attn.q.scalar_mult_mean'))
    lines = ['| run | ' + ' | '.join(k[:-len('.weight_rms')] for k in rms)
             + " | Q's scalar, real | Q's scalar, noise |", '|---' * (len(rms) + 3) + '|']
    for r in results:
        ratios = [r['noise'][k][-1] / r['real'][k][-1] for k in rms]
        lines.append(f"| {r['label']} | " + ' | '.join(f'{v:.2f}' for v in ratios)
                     + f" | {r['real'][q_scalar][-1]:.2f} | {r['noise'][q_scalar][-1]:.2f} |")
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    dirs = run_dirs()
    missing = [d for d in dirs if not all(os.path.exists(os.path.join(d, f))
                                          for f in ('ckpt.pt', 'log.jsonl'))]
    if missing:
        sys.exit(f'abm: needs the run folders (ckpt.pt, log.jsonl; not committed) of '
                 f'{len(missing)} equilibrium runs, e.g. {os.path.relpath(missing[0])}: delete '
                 'their records from experiments/equilibrium/{adamw_frozen,muon_frozen}/'
                 'results.json, or point EQUILIBRIUM in this script at a fresh folder, and run '
                 'this again (the committed abm.png stands meanwhile)')
    abm.main(dirs + ['--out', os.path.join(HERE, 'abm.png')])
    with open(os.path.join(HERE, 'abm.json')) as f:
        print(table(json.load(f)))
