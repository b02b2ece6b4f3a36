"""
The paper's main result at small scale (its Sec. 5.1, Fig. 7): can learnable multipliers replace
the tuning of muP-style multipliers? Four tuning configurations of growing cost, each trained
without and with LRM (--row_mult --col_mult), for AdamW and for Muon:

    NONE   every multiplier 1, the global LR at its best on the 2x2's sqrt(2) ladder
    LR     the per-group LR factors tuned (--lr_factors)
    LRWD   then the per-group weight-decay factors (--wd_factors)
    FULL   then the five forward multipliers (--embed_mult --logit_mult --attn_logit_mult
           --attn_out_mult --mlp_out_mult)

Our own tuning (Falcon-H1's values do not transfer to this model), on the tuning seed 1337, which
is never reported, and on the model without multipliers (as muP values are tuned; LRM then gets the
same values): one coordinate pass on a factor-of-2 grid, in the order of COORDINATES, starting from
every factor 1 at the global LR 1.4e-3. Each coordinate tries both neighbours of its value and
walks towards the better one until its best has a worse neighbour on each side, or a neighbour
that may not run: a matrix group lasting under 3 equilibrium times sum_t lr_t * wd (the floor), a
group with lr x wd >= 1, or a factor outside 1/16 ... 16 (the limit). The tuned values carry on to
the next coordinate and the next tier. The global LR 1.4e-3 (6.0 equilibrium times) leaves one
factor-of-2 step down above the floor; NONE runs at 7.1e-4, the 2x2's best for both optimizers
without multipliers (the floor, 3.0 times).

Then the 16 configurations on the reported seeds 1340-1342, evaluated every 50 steps for the gap
over training (Fig. 7 right).

    python experiments/tuning_tiers/run.py          # resumable: recorded runs are skipped
    python experiments/tuning_tiers/run.py adamw    # one optimizer's share (two side by side)

Writes <optimizer>_tuning/ and <optimizer>[+lrm]/ (results.json: one record per run), commits.json
(the commit each run trained with), results.md and tuning_tiers.png.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/
from recipe import MODEL, MUON, SCHEDULE, SEEDS, factor_sum, write_report  # noqa: E402
from sweep import REPO, mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# the 2x2's recipe: 1000 steps, one weight decay 5 for every matrix, z-loss 1e-4; the gains and
# the multipliers learn at the project's default 1e-2 (--gain_lr, --mult_lr), multipliers' wd 2e-3
STEPS, WD = 1000, 5.0
RUN = MODEL + SCHEDULE + ['--max_iters', str(STEPS), '--weight_decay', f'{WD:g}',
                          '--z_loss', '1e-4', '--eval_iters', '20', '--log_interval', '100']
TUNING_EVAL = ['--eval_interval', '100']
REPORTED_EVAL = ['--eval_interval', '50']  # the gap over training, 4 points in the decay
OPTIMIZERS = {'adamw': [], 'muon': MUON}
LRM = ['--row_mult', '--col_mult']
TUNING_SEED = 1337
ORIGIN_LR = 1e-3 * 2 ** 0.5  # where the search starts (1.4e-3: 6.0 equilibrium times)
NONE_LR = 1e-3 / 2 ** 0.5  # NONE's global LR: the 2x2's best for adamw and muon, gains at 1e-2
# the tuned groups: four LR factors, four WD factors, five forward multipliers (13 coordinates a
# optimizer). Q, K, V, O share a factor, and gate, up, down: muP's groups, and what fits the machine
GROUPS = {'embed': ('embed',), 'head': ('head',), 'attention': ('q', 'k', 'v', 'o'),
          'mlp': ('gate', 'up', 'down')}
FORWARD = ('embed_mult', 'logit_mult', 'attn_logit_mult', 'attn_out_mult', 'mlp_out_mult')
COORDINATES = {'LR': [('lr', g) for g in GROUPS], 'LRWD': [('wd', g) for g in GROUPS],
               'FULL': [('forward', m) for m in FORWARD]}
TIERS = ('NONE', 'LR', 'LRWD', 'FULL')
LIMIT = (1 / 16, 16)  # the factors the search may try


def lr_text(lr):
    return f'{lr:.3g}'  # as the 2x2's ladder writes it: the same run names, the same flags


def point(optimizer, values, lr=ORIGIN_LR):
    """The flags of one tuning point: the global LR (decayed x8) and every factor that is not 1."""
    p = dict(learning_rate=lr_text(lr), min_lr=lr_text(lr / 8))
    if optimizer == 'muon':
        p['muon_lr'] = p['learning_rate']  # match_rms_adamw: AdamW's LR carries over
    for what, flag in (('lr', 'lr_factors'), ('wd', 'wd_factors')):
        factors = [f'{kind}={values[what, group]:g}' for group, kinds in GROUPS.items()
                   for kind in kinds if values.get((what, group), 1) != 1]
        if factors:
            p[flag] = ','.join(factors)
    p.update({m: f"{values['forward', m]:g}" for m in FORWARD if values.get(('forward', m), 1) != 1})
    return p


def schedule_sum():
    return factor_sum(RUN + ['--learning_rate', '1e-3', '--min_lr', '1.25e-4'])


def equilibrium_times(values, group, lr=ORIGIN_LR):
    """sum_t lr_t * wd of a matrix group: how many times 1/(lr wd) the run lasts."""
    return lr * values.get(('lr', group), 1) * WD * values.get(('wd', group), 1) * schedule_sum()


def blocked(values):
    """Why a point may not run ('floor', 'limit'), or None."""
    if any(not LIMIT[0] <= f <= LIMIT[1] for f in values.values()):
        return 'limit'
    if any(ORIGIN_LR * values.get(('lr', g), 1) * WD * values.get(('wd', g), 1) >= 1
           for g in GROUPS):
        return 'limit'
    if any(equilibrium_times(values, g) < 3 - 1e-9 for g in GROUPS):
        return 'floor'
    return None


def tuning_loss(optimizer, values):
    """Final val loss of one point on the tuning seed (inf where it failed or diverged)."""
    p = point(optimizer, values)
    records = run_points(folder(optimizer, 'tuning'), [p], (TUNING_SEED,),
                         RUN + TUNING_EVAL + OPTIMIZERS[optimizer])
    note_commits(folder(optimizer, 'tuning'), records)
    losses = [r['final_val_loss'] for r in records if r['point'] == p and r['status'] == 'ok']
    return losses[0] if losses else float('inf')


def tune(optimizer):
    """The coordinate pass. Returns (values after each tier, one row per coordinate)."""
    values, tuned, rows = {}, {'NONE': {}}, []
    for tier in TIERS[1:]:
        for coordinate in COORDINATES[tier]:
            ladder, rungs = {}, [values.get(coordinate, 1.0)]
            while rungs:
                for f in rungs:
                    ladder[f] = tuning_loss(optimizer, {**values, coordinate: f})
                best = min(ladder, key=ladder.get)
                rungs = [f for f in (best / 2, best * 2) if f not in ladder
                         and blocked({**values, coordinate: f}) is None]
            ends = ['bracketed' if f in ladder else blocked({**values, coordinate: f})
                    for f in (best / 2, best * 2)]
            rows.append(dict(tier=tier, coordinate=coordinate, ladder=ladder, best=best,
                             below=ends[0], above=ends[1]))
            values[coordinate] = best
        tuned[tier] = dict(values)
    return tuned, rows


def folder(optimizer, kind):
    return os.path.join(HERE, f'{optimizer}_{kind}')


def reported_flags(optimizer, lrm):
    return RUN + REPORTED_EVAL + OPTIMIZERS[optimizer] + (LRM if lrm else [])


def reported_point(optimizer, tier, tuned):
    return point(optimizer, tuned[tier], NONE_LR if tier == 'NONE' else ORIGIN_LR)


def run_reported(optimizer, tuned):
    """The four tiers x (none, LRM) on the reported seeds. Returns {(tier, lrm): {seed: record}}."""
    runs = {}
    for lrm in (False, True):
        out_dir = folder(optimizer, 'lrm' if lrm else 'none')
        points = [reported_point(optimizer, tier, tuned) for tier in TIERS]
        records = run_points(out_dir, points, SEEDS, reported_flags(optimizer, lrm))
        note_commits(out_dir, records)
        for tier, p in zip(TIERS, points):
            runs[tier, lrm] = {r['seed']: r for r in records if r['point'] == p
                               and r['status'] == 'ok' and r['seed'] in SEEDS}
    return runs


def note_commits(out_dir, records):
    """commits.json: the commit of the code each recorded run trained with (the checkout's HEAD
    when the run was first recorded here; the runs were made from a clean worktree)."""
    path = os.path.join(HERE, 'commits.json')
    commits = json.load(open(path)) if os.path.exists(path) else {}
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True,
                          text=True).stdout.strip() or 'unknown'
    key = os.path.basename(out_dir)
    new = {r['name']: head for r in records if r['name'] not in commits.get(key, {})}
    if new:
        commits.setdefault(key, {}).update(new)
        with open(path, 'w') as f:
            json.dump(commits, f, indent=1, sort_keys=True)


def main(chosen):
    tuning, reported = {}, {}
    for optimizer in OPTIMIZERS:
        if optimizer in chosen:
            tuning[optimizer] = tune(optimizer)
            reported[optimizer] = run_reported(optimizer, tuning[optimizer][0])
    if len(tuning) < len(OPTIMIZERS):
        return  # one optimizer's share: the report needs both
    import report  # noqa: E402  (the tables and the figure, beside this script)
    write_report(HERE, report.tables(tuning, reported),
                 lambda: report.plot(tuning, reported, os.path.join(HERE, 'tuning_tiers.png')))


if __name__ == '__main__':
    main(sys.argv[1:] or OPTIMIZERS)
