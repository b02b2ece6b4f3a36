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
same values): a coordinate pass on a factor-of-2 grid, in the order of COORDINATES, starting from
NONE itself. NONE runs at the LR 7.07e-4, the 2x2's best for both optimizers without multipliers
(on its sqrt(2) ladder, at the floor: 3.0 equilibrium times); the search writes it as the global LR
1.414e-3 with every group's LR factor 0.5 (the same run, bit for bit), so that each factor has room
to move. Each coordinate tries both neighbours of its value and walks towards the better one until
its best has a worse neighbour on each side, or a neighbour that may not run: a matrix group
lasting under 3 equilibrium times sum_t lr_t * wd (the floor), a group with lr x wd >= 1, or a
factor outside 1/16 ... 16 (the limit). A coordinate moves only to a lower loss, so each tier ends
at most as high as the one before it, on the tuning seed. The values carry on to the next
coordinate and tier; LRWD tunes the WD factors, then the LR factors once more (a higher WD lets an
LR go below the floor it met alone).

Then the 16 configurations on the reported seeds 1340-1342, evaluated every 50 steps for the gap
over training (Fig. 7 right).

    python experiments/tuning_tiers/run.py          # resumable: recorded runs are skipped
    python experiments/tuning_tiers/run.py adamw    # one optimizer's share (two side by side)

Writes <optimizer>_tuning/ and <optimizer>_none/, <optimizer>_lrm/ (results.json: one record per
run), commits.json (the commit each run trained with), curves.json and gains.json (what the
report reads of the run folders, which are not committed), results.md and tuning_tiers.png.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/
import torch  # noqa: E402
from recipe import (MODEL, MUON, SCHEDULE, SEEDS, factor_sum, multiplier_distance,  # noqa: E402
                    write_report)
from sweep import REPO, mean_std, read_json, read_log, run_points  # noqa: E402

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
# NONE's LR: the 2x2's best for adamw and muon without multipliers, gains at 1e-2, as it wrote it;
# the search's global LR is exactly twice it, and starts with every group's LR factor at 0.5
NONE_LR, NONE_MIN_LR = '0.000707', '8.84e-05'  # decay x8
BASE_LR, BASE_MIN_LR = '0.001414', '0.0001768'
# the tuned groups: four LR factors, four WD factors, five forward multipliers (13 coordinates a
# optimizer). Q, K, V, O share a factor, and gate, up, down: muP's groups, and what fits the machine
GROUPS = {'embed': ('embed',), 'head': ('head',), 'attention': ('q', 'k', 'v', 'o'),
          'mlp': ('gate', 'up', 'down')}
FORWARD = ('embed_mult', 'logit_mult', 'attn_logit_mult', 'attn_out_mult', 'mlp_out_mult')
START = {('lr', g): 0.5 for g in GROUPS}  # NONE, bit for bit
COORDINATES = {'LR': [('lr', g) for g in GROUPS],
               'LRWD': [('wd', g) for g in GROUPS] + [('lr', g) for g in GROUPS],
               'FULL': [('forward', m) for m in FORWARD]}
TIERS = ('NONE', 'LR', 'LRWD', 'FULL')
LIMIT = (1 / 16, 16)  # the factors the search may try


def point(optimizer, values, none=False):
    """The flags of one point: the global LR (decayed x8) and every factor that is not 1; none:
    NONE's LR, with no factor."""
    p = dict(learning_rate=NONE_LR, min_lr=NONE_MIN_LR) if none else \
        dict(learning_rate=BASE_LR, min_lr=BASE_MIN_LR)
    if optimizer == 'muon':
        p['muon_lr'] = p['learning_rate']  # match_rms_adamw: AdamW's LR carries over
    for what, flag in (('lr', 'lr_factors'), ('wd', 'wd_factors')):
        factors = [f'{kind}={values[what, group]:g}' for group, kinds in GROUPS.items()
                   for kind in kinds if values.get((what, group), 1) != 1]
        if factors:
            p[flag] = ','.join(factors)
    p.update({m: f"{values['forward', m]:g}" for m in FORWARD
              if values.get(('forward', m), 1) != 1})
    return p


def schedule_sum():
    return factor_sum(RUN + ['--learning_rate', '1e-3', '--min_lr', '1.25e-4'])


def equilibrium_times(values, group):
    """sum_t lr_t * wd of a matrix group: how many times 1/(lr wd) the run lasts."""
    return float(BASE_LR) * values.get(('lr', group), 1) * WD * values.get(('wd', group), 1) * \
        schedule_sum()


def blocked(values):
    """Why a point may not run ('floor', 'limit'), or None."""
    if any(not LIMIT[0] <= f <= LIMIT[1] for f in values.values()):
        return 'limit'
    if any(float(BASE_LR) * values.get(('lr', g), 1) * WD * values.get(('wd', g), 1) >= 1
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
    values, tuned, rows = dict(START), {'NONE': {}}, []
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
    """A tier's flags; where its search kept NONE's values (every LR factor 0.5 at BASE_LR is NONE's
    LR), NONE's flags: the same configuration, run once."""
    kept = {k: v for k, v in tuned[tier].items() if v != 1}  # a factor 1 is no flag
    return point(optimizer, {}, none=True) if kept in ({}, START) else point(optimizer, kept)


def run_reported(optimizer, tuned):
    """The four tiers x (none, LRM) on the reported seeds. Returns {(tier, lrm): {seed: record}}."""
    runs = {}
    for lrm in (False, True):
        out_dir = folder(optimizer, 'lrm' if lrm else 'none')
        points = [reported_point(optimizer, tier, tuned) for tier in TIERS]
        unique = [p for i, p in enumerate(points) if p not in points[:i]]  # a tier like another
        records = run_points(out_dir, unique, SEEDS, reported_flags(optimizer, lrm))
        note_commits(out_dir, records)
        for tier, p in zip(TIERS, points):
            runs[tier, lrm] = {r['seed']: r for r in records if r['point'] == p
                               and r['status'] == 'ok' and r['seed'] in SEEDS}
    return runs


def note_commits(out_dir, records):
    """commits.json: the commit of the code each recorded run trained with (the checkout's HEAD
    when the run was first recorded here; the runs were made from a clean worktree)."""
    path = os.path.join(HERE, 'commits.json')
    commits = read_json(path, 'restore it (git checkout)') if os.path.exists(path) else {}
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True,
                          text=True).stdout.strip() or 'unknown'
    key = os.path.basename(out_dir)
    new = {r['name']: head for r in records if r['name'] not in commits.get(key, {})}
    if new:
        commits.setdefault(key, {}).update(new)
        with open(path, 'w') as f:
            json.dump(commits, f, indent=1, sort_keys=True)


# -------------------------------------------------------------------------------------------------
# the report: tables (results.md) and the figure, from what is committed


def label(tier, lrm):
    return tier + (' + LRM' if lrm else '')


def coordinate_label(coordinate):
    what, name = coordinate
    if what == 'forward':
        return f'--{name}'
    return f"{'LR' if what == 'lr' else 'WD'} factor, {name} ({', '.join(GROUPS[name])})"


def flags_of(optimizer, tier, tuned):
    """The tuned configuration as the flags a user copies (besides the recipe's)."""
    return ' '.join(f'--{k} {v}' for k, v in reported_point(optimizer, tier, tuned).items())


def finals(runs, config):
    return [runs[config][seed]['final_val_loss'] for seed in SEEDS if seed in runs[config]]


def paired(runs, a, b):
    """b minus a, per reported seed (the same data order, initial W~ and evaluation batches)."""
    return [runs[b][seed]['final_val_loss'] - runs[a][seed]['final_val_loss'] for seed in SEEDS
            if seed in runs[a] and seed in runs[b]]


def difference_cell(deltas):
    """'per seed | mean ± std | t' of paired differences; t = mean / (std / sqrt(n))."""
    if deltas and not any(deltas):
        return 'the same runs (one configuration) | - | -'
    if len(deltas) < 2:
        return ' | '.join([', '.join(f'{d:+.4f}' for d in deltas) or '-', '-', '-'])
    mean, std = mean_std(deltas)
    t = mean / (std / len(deltas) ** 0.5) if std else float('inf')
    return f"{', '.join(f'{d:+.4f}' for d in deltas)} | {mean:+.4f} ± {std:.4f} | {t:.1f}"


def tier_checks(runs):
    """The paper's findings (Sec. 5.1), each as paired differences b minus a, (tier, lrm) each."""
    others = [(t, lrm) for t in TIERS for lrm in (False, True) if (t, lrm) != ('NONE', False)]
    means = {t: mean_std(finals(runs, (t, False))) for t in TIERS[1:]}
    best = min((t for t in means if means[t]), key=lambda t: means[t][0], default='FULL')
    return [
        ('(i) non-learnable and untuned is clearly the worst: each other configuration minus NONE',
         [(('NONE', False), c) for c in others]),
        ('(ii) non-learnable with at least LR tuning is close to LRM without tuning',
         [(('NONE', True), (t, False)) for t in ('LR', 'LRWD', 'FULL')]),
        ('(iii) LRM with LR tuning: close to each other', [(('LR', True), ('LRWD', True)),
                                                          (('LR', True), ('FULL', True))]),
        (f'(iii) ... and best: against the best tuned one without LRM ({best})',
         [((best, False), (t, True)) for t in ('LR', 'LRWD', 'FULL')]),
        ('tuning forward and WD multipliers gave little without LRM',
         [(('LR', False), ('LRWD', False)), (('LRWD', False), ('FULL', False))]),
    ]


def tables(tuning, reported, gaps, gains):
    out = [f'Tuning seed {TUNING_SEED} (never reported), on the model without multipliers; '
           f'reported seeds {", ".join(map(str, SEEDS))}. Reach of a learnable scale at its LR '
           f'1e-2: 1e-2 x {schedule_sum():.1f} = {1e-2 * schedule_sum():.2f}. A matrix group '
           f'lasts lr x factor_lr x wd x factor_wd x {schedule_sum():.1f} equilibrium times '
           f'({equilibrium_times(START, "mlp"):.2f} at NONE\'s LR {NONE_LR}).', '']
    for optimizer, (tuned, rows) in tuning.items():
        out += [f'**{optimizer}: the coordinate pass** (factor: final val loss; bracketed: a '
                'worse neighbour was run; floor: the neighbour would last < 3 equilibrium times; '
                'limit: outside 1/16 ... 16 or lr x wd >= 1)', '',
                '| tier | coordinate | ladder | chosen | below | above |',
                '|---|---|---|---|---|---|']
        for row in rows:
            ladder = ', '.join(f'{f:g}: {loss:.4f}' for f, loss in sorted(row['ladder'].items()))
            out.append(f"| {row['tier']} | {coordinate_label(row['coordinate'])} | {ladder} | "
                       f"{row['best']:g} | {row['below']} | {row['above']} |")
        out += ['', f'**{optimizer}: the tuned configurations** (besides the recipe\'s flags; '
                'the fewest equilibrium times of any matrix group)', '',
                '| tier | flags | equilibrium times |', '|---|---|---|']
        for tier in TIERS:
            times = min(equilibrium_times(tuned[tier] or START, g) for g in GROUPS)
            out.append(f'| {tier} | `{flags_of(optimizer, tier, tuned)}` | {times:.2f} |')
        out.append('')
    out += ['**The 16 configurations**: final val loss, seeds '
            f'{", ".join(map(str, SEEDS))} (mean ± std; per seed)', '',
            '| optimizer | tier | none | LRM | LRM minus none, per seed | mean ± std | t |',
            '|---|---|---|---|---|---|---|']
    for optimizer, runs in reported.items():
        names = tier_names(optimizer, tuning[optimizer][0], ': the search kept its values')
        for tier in TIERS:
            name = names[tier]
            cells = []
            for lrm in (False, True):
                values = finals(runs, (tier, lrm))
                stats = mean_std(values)
                cells.append('-' if stats is None else f"{stats[0]:.4f} ± {stats[1]:.4f} "
                             f"({', '.join(f'{v:.4f}' for v in values)})")
            out.append(f'| {optimizer} | {name} | {cells[0]} | {cells[1]} | '
                       f'{difference_cell(paired(runs, (tier, False), (tier, True)))} |')
    out += ['', "**The paper's findings, one by one** (paired by seed; t with 2 degrees of "
            'freedom: |t| > 4.30 for p < 0.05)', '',
            '| optimizer | finding | b minus a | per seed | mean ± std | t |',
            '|---|---|---|---|---|---|']
    for optimizer, runs in reported.items():
        for finding, pairs in tier_checks(runs):
            for i, (a, b) in enumerate(pairs):
                shown = finding if i == 0 else '"'
                out.append(f'| {optimizer} | {shown} | {label(*b)} minus {label(*a)} | '
                           f'{difference_cell(paired(runs, a, b))} |')
    out += ['', '**The gap over training** (Fig. 7 right): LRM minus none, val loss, mean ± std '
            f'over the seeds, at the steps below (the decay starts at step {decay_start()})', '']
    steps = gap_steps(gaps)
    out += ['| optimizer | tier | ' + ' | '.join(map(str, steps)) + ' |',
            '|---|---|' + '---|' * len(steps)]
    for optimizer in gaps:
        for tier in TIERS:
            cells = []
            for step in steps:
                stats = mean_std(gaps[optimizer][tier].get(step, []))
                cells.append('-' if stats is None else f'{stats[0]:+.3f} ± {stats[1]:.3f}')
            out.append(f"| {optimizer} | {tier} | {' | '.join(cells)} |")
    out += ['', '**Reach against distance** of the learnable scales (reach 1e-2 x '
            f'{schedule_sum():.1f} = {1e-2 * schedule_sum():.2f}; the farthest any ended from 1, '
            'over the reported seeds)', '',
            '| optimizer | tier | multipliers (LRM) | RMSNorm gains, none | RMSNorm gains, LRM |',
            '|---|---|---|---|---|']
    for optimizer, runs in reported.items():
        for tier in TIERS:
            mults = [multiplier_distance(r) for r in runs[tier, True].values()]
            cells = [f'{max(mults):.2f}' if mults else '-']
            for lrm in (False, True):
                distances = [gains[k] for r in runs[tier, lrm].values()
                             if (k := run_key(optimizer, lrm, r)) in gains]
                cells.append(f'{max(distances):.2f}' if distances else '-')
            out.append(f"| {optimizer} | {tier} | {' | '.join(cells)} |")
    return '\n'.join(out) + '\n'


def tier_names(optimizer, tuned, why=''):
    """{tier: its name, 'LR (= NONE)' where the search kept an earlier tier's configuration}."""
    points = {t: reported_point(optimizer, t, tuned) for t in TIERS}
    same = {t: [u for u in TIERS[:TIERS.index(t)] if points[u] == points[t]] for t in TIERS}
    return {t: f'{t} (= {same[t][0]}{why})' if same[t] else t for t in TIERS}


def decay_start():
    return int(STEPS * (1 - float(SCHEDULE[SCHEDULE.index('--decay_frac') + 1])))


def gap_steps(gaps):
    every = sorted({step for tiers in gaps.values() for steps in tiers.values() for step in steps})
    return [step for step in every if step and (step % 100 == 0 or step > decay_start())]


def run_key(optimizer, lrm, record):
    """A reported run's key in curves.json and gains.json: its folder and name (a run without and
    one with LRM share a name: LRM's flags are the folder's)."""
    return f"{optimizer}_{'lrm' if lrm else 'none'}/{record['name']}"


def per_run(reported, name, measure):
    """{run key: measure(run folder)} of every reported run: measured where its run folder is here,
    else read from the committed file `name` (rewritten here, for a fresh clone)."""
    path = os.path.join(HERE, name)
    kept = read_json(path, 'restore it (git checkout)') if os.path.exists(path) else {}
    for optimizer, runs in reported.items():
        for (tier, lrm), by_seed in runs.items():
            for record in by_seed.values():
                run_dir = os.path.join(folder(optimizer, 'lrm' if lrm else 'none'), 'runs',
                                       record['name'])
                key = run_key(optimizer, lrm, record)
                if key not in kept and os.path.isdir(run_dir):
                    kept[key] = measure(run_dir)
    with open(path, 'w') as f:
        json.dump(kept, f, indent=1, sort_keys=True)
    return kept


def val_curve(run_dir):
    """[[iter, val loss], ...] of a run, from its log.jsonl."""
    return [[line['iter'], line['val_loss']] for line in read_log(run_dir) if 'val_loss' in line]


def gain_distance(run_dir):
    """How far a run's RMSNorm gains (the blocks' and the final one) ended from 1."""
    state = torch.load(os.path.join(run_dir, 'ckpt.pt'), map_location='cpu',
                       weights_only=True)['model']
    return max((v.float() - 1).abs().max().item() for k, v in state.items()
               if '.norm_' in k or 'norm_out' in k)


def gaps_of(reported, curves):
    """{optimizer: {tier: {step: [LRM minus none, per seed]}}}."""
    gaps = {}
    for optimizer, runs in reported.items():
        for tier in TIERS:
            by_step = gaps.setdefault(optimizer, {}).setdefault(tier, {})
            for seed in SEEDS:
                none, lrm = runs[tier, False].get(seed), runs[tier, True].get(seed)
                keys = None if none is None or lrm is None else \
                    (run_key(optimizer, False, none), run_key(optimizer, True, lrm))
                if keys is None or not all(k in curves for k in keys):
                    continue
                base = dict(map(tuple, curves[keys[0]]))
                for step, loss in curves[keys[1]]:
                    if step in base:
                        by_step.setdefault(step, []).append(loss - base[step])
    return gaps


def plot(gaps, tuning, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, optimizer in zip(axes, gaps):
        names = tier_names(optimizer, tuning[optimizer][0])
        for i, tier in enumerate(TIERS):
            steps = sorted(s for s, v in gaps[optimizer][tier].items() if len(v) == len(SEEDS))
            stats = [mean_std(gaps[optimizer][tier][s]) for s in steps]
            mean = [m for m, _ in stats]
            ax.plot(steps, mean, color=f'C{i}', label=names[tier])
            ax.fill_between(steps, [m - s for m, s in stats], [m + s for m, s in stats],
                            color=f'C{i}', alpha=0.15)
        ax.axhline(0, color='k', lw=0.8)
        ax.axvline(decay_start(), color='0.5', ls=':', lw=1)
        ax.text(decay_start(), 0.98, ' decay', fontsize=7, va='top',
                transform=ax.get_xaxis_transform())
        ax.set_title(f'{optimizer}: LRM minus none, val loss (mean ± std over seeds '
                     f'{SEEDS[0]}-{SEEDS[-1]})', fontsize=9)
        ax.set_xlabel('step', fontsize=8)
        ax.legend(title='tuning tier', fontsize=7, title_fontsize=7)
    axes[0].set_ylabel('val loss, LRM minus none', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(chosen):
    tuning, reported = {}, {}
    for optimizer in OPTIMIZERS:
        if optimizer in chosen:
            tuning[optimizer] = tune(optimizer)
            reported[optimizer] = run_reported(optimizer, tuning[optimizer][0])
    if len(tuning) < len(OPTIMIZERS):
        return  # one optimizer's share: the report needs both
    gaps = gaps_of(reported, per_run(reported, 'curves.json', val_curve))
    gains = per_run(reported, 'gains.json', gain_distance)
    write_report(HERE, tables(tuning, reported, gaps, gains),
                 lambda: plot(gaps, tuning, os.path.join(HERE, 'tuning_tiers.png')))


if __name__ == '__main__':
    main(sys.argv[1:] or OPTIMIZERS)
