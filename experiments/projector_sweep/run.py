"""
The paper's projector sweep (Sec. 3, Fig. 1 top), at small scale: move the equilibrium scale S =
sqrt(lr / wd) of the LM head alone, at fixed lr * wd, over 1/16 ... 64 times the rest's, with the
final RMSNorm gain (the head's column scale) fixed to 1, one learnable scalar, or the usual
learnable vector; z-loss off (it acts on the logits). A fixed gain cannot undo the head's scale,
so the logits grow or shrink with S; a learnable gain can, as far as its reach allows.

    python experiments/projector_sweep/run.py              # resumable: recorded runs are skipped
    python experiments/projector_sweep/run.py speed        # the learnable gains at 3x their LR
    python experiments/projector_sweep/run.py first        # the first sweep (embedding_wd6/)
    python experiments/projector_sweep/run.py collapse     # block 0's Q/K collapse, its cause

Writes results.json (one record per run), results.md and projector_sweep.png (the first sweep's
into embedding_wd6/).
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from experiments.recipe import factor_sum, write_report  # noqa: E402
from experiments.sweep import mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIRST = os.path.join(HERE, 'embedding_wd6')  # the first sweep, where block 0's Q/K collapse
MODEL = ['--dataset', 'shakespeare_char', '--device', 'cpu', '--n_layer', '4', '--n_head', '4',
         '--n_embd', '128', '--block_size', '64', '--batch_size', '12', '--sample_tokens', '0']
# 1000 steps, the paper's schedule (LR factors summing to 853.7, factor_sum); every hidden matrix,
# and the head through --wd_factors below, at lr * wd = 0.012: 10.2 equilibrium times
RUN = ['--max_iters', '1000', '--schedule', 'wsd', '--warmup_iters', '100', '--decay_frac', '0.167',
       '--learning_rate', '2e-3', '--min_lr', '2.5e-4', '--matrix_lr', '2e-3', '--matrix_wd', '6',
       '--eval_interval', '100', '--eval_iters', '10', '--log_interval', '100']
# the final gain at an LR of its own, 5e-2: reach 5e-2 x 853.7 = 42.7, twice the ~20 it needed at
# k = 1/16 in the first sweep; the blocks' gains frozen at 1 (at 5e-2 block 0's Q/K collapse)
GAIN_LR = 5e-2
SWEEP = MODEL + RUN + ['--gain_lr', f'{GAIN_LR:g}', '--freeze_gains']
# the first sweep: the embedding at wd 6 too and every gain at 10 x 2e-3 (reach 17.1)
FIRST_SWEEP = MODEL + RUN + ['--gain_lr', '2e-3']
# the second attempt, cut short: the blocks' gains at 5e-2 too
ALL_GAINS = os.path.join(HERE, 'all_gains_5e-2')
ALL_GAINS_SWEEP = MODEL + RUN + ['--gain_lr', f'{GAIN_LR:g}']
S_FACTORS = (1 / 16, 1 / 4, 1, 4, 16, 64)  # S of the head relative to the rest: lr x k, wd / k
SEEDS = {1 / 16: (1337, 1338), 1: (1337, 1338), 64: (1337, 1338)}  # the ends and the centre
GAINS = ('fixed', 'scalar', 'vector')
COLLAPSED = 1e-3  # block 0's W_Q and W_K below this RMS (0.0056-0.0095 in the first sweep's others)


def head_point(k, final_gain):
    """The head's S times k (the embedding at its base wd 0.1), one final-gain mode."""
    return dict(final_gain=final_gain, lr_factors=f'head={k:g}', wd_factors=f'head={60 / k:g}')


def first_point(k, final_gain):
    """The first sweep's point: also the embedding at wd 6 and every gain at 10 x the LR."""
    return dict(final_gain=final_gain, lr_factors=f'head={k:g},gains=10',
                wd_factors=f'embed=60,head={60 / k:g}')


def sweep():
    points = [(head_point(k, gain), SEEDS.get(k, (1337,))) for gain in GAINS for k in S_FACTORS]
    for point, seeds in points:
        run_points(HERE, [point], seeds, SWEEP)
    return run_points(HERE, [])


def first_sweep():
    return run_points(FIRST, [first_point(k, gain) for gain in GAINS for k in S_FACTORS], (1337,),
                      FIRST_SWEEP)


def reach(records):
    """The final gain's reach: its LR x the sum of the schedule's factors (Adam moves it ~lr a
    step); the first sweep's gains learn at 10 x 2e-3."""
    first = any(r['point'] == first_point(1, r['point']['final_gain']) for r in records)
    return (10 * 2e-3 if first else GAIN_LR) * factor_sum(SWEEP)


def runs_at(records, k, gain):
    """Every finished run at k with that gain (either sweep's point), by seed."""
    return sorted((r for r in records if r['status'] == 'ok' and r['point'] in
                   (head_point(k, gain), first_point(k, gain))), key=lambda r: r['seed'])


def value(record, key):
    return record[key] if key in record else record['final'].get(key)


def values(records, k, gain, key):
    """[value(run, key) for each seed's run at k]."""
    return [value(r, key) for r in runs_at(records, k, gain)]


def label(k):
    return f'1/{1 / k:g}' if k < 1 else f'{k:g}'


def needed_gain(records, run, k, gain):
    """The gain (its mean) that would give the head of this run at k the effective scale
    gain x RMS(W~) of the k = 1 run (the same seed); None for the fixed gain."""
    centre = {r['seed']: r for r in runs_at(records, 1, gain)}
    centre = centre.get(run['seed'], centre.get(1337))
    if gain == 'fixed' or centre is None:
        return None
    target = value(centre, 'norm_out.gain_mean') * value(centre, 'head.weight_rms')
    return target / value(run, 'head.weight_rms')


def gain_distance(records, k, gain):
    """(travelled, needed): the farthest the final gain of a run at k went from its start 1, and
    would have to go (needed_gain); None for the fixed gain."""
    runs = runs_at(records, k, gain)
    if gain == 'fixed' or not runs or not runs_at(records, 1, gain):
        return None
    return (max(abs(value(r, 'norm_out.gain_mean') - 1) for r in runs),
            max(abs(needed_gain(records, r, k, gain) - 1) for r in runs))


def speed_limited(records, k, gain):
    """Reach below twice the distance (travelled or needed): the gain's speed is measured."""
    distance = gain_distance(records, k, gain)
    return distance is not None and reach(records) < 2 * max(distance)


def collapsed(run):
    final = run['final']
    return max(final['blocks.0.attn.q.weight_rms'], final['blocks.0.attn.k.weight_rms']) < COLLAPSED


def cell(numbers, digits=4):
    mean, std = mean_std(numbers)
    return f'{mean:.{digits}f}' + (f' ± {std:.{digits}f}' if len(numbers) > 1 else '')


def tables(records):
    seeds = sorted({r['seed'] for r in records})
    lines = [f"Final val loss, mean ± std over seeds {' and '.join(map(str, seeds))} where a std "
             'is given, else seed 1337 alone (RMS of the logits on the first val batch); '
             f"(speed-limited): the gain's reach {reach(records):.1f} is below twice its distance; "
             f"(Q/K collapsed): block 0's W_Q and W_K at RMS < {COLLAPSED:g} in a run.", '',
             '| final gain | ' + ' | '.join(f'S x {label(k)}' for k in S_FACTORS) + ' | spread |',
             '|---' * (len(S_FACTORS) + 2) + '|']
    for gain in GAINS:
        cells, means = [], []
        for k in S_FACTORS:
            runs = runs_at(records, k, gain)
            if not runs:
                cells.append('')
                continue
            notes = [f"logits {cell(values(records, k, gain, 'logits_rms'), 2)}"]
            notes += ['speed-limited'] if speed_limited(records, k, gain) else []
            notes += ['Q/K collapsed'] if any(map(collapsed, runs)) else []
            losses = values(records, k, gain, 'final_val_loss')
            cells.append(f"{cell(losses)} ({', '.join(notes)})")
            means.append(mean_std(losses)[0])
        lines.append(f'| {gain} | ' + ' | '.join(cells) + f' | {max(means) - min(means):.4f} |')
    lines += ['', "Every run: RMS of the head's W~, the final gain (mean), the gain needed for the "
              "k = 1 run's gain x RMS(W~) (same seed), 2 x distance / reach "
              f"({reach(records):.2f}; the point's, over its seeds), block 0's W_Q and W_K RMS:",
              '', '| final gain | k | seed | final val | head W~ | gain | needed | '
              '2 x distance / reach | block 0 Q, K |', '|---' * 9 + '|']
    for gain in GAINS:
        for k in S_FACTORS:
            distance = gain_distance(records, k, gain)
            for r in runs_at(records, k, gain):
                f = r['final']
                g = f"{f['norm_out.gain_mean']:.2f}" if distance else '1 (fixed)'
                needed = f'{needed_gain(records, r, k, gain):.2f}' if distance else ''
                ratio = f'{2 * max(distance) / reach(records):.2f}' if distance else ''
                ratio += ' speed-limited' if speed_limited(records, k, gain) else ''
                qk = f"{f['blocks.0.attn.q.weight_rms']:.1e}, {f['blocks.0.attn.k.weight_rms']:.1e}"
                lines.append(f"| {gain} | {label(k)} | {r['seed']} | {r['final_val_loss']:.4f} | "
                             f"{f['head.weight_rms']:.5f} | {g} | {needed} | {ratio} | {qk} |")
    return '\n'.join(lines) + '\n'


def draw(ax, records, gain, key, top=None, **style):
    """One gain's mean over seeds against k: a filled marker and a std bar where two seeds ran, an
    open one where one did; values above top drawn at top."""
    ks = [k for k in S_FACTORS if runs_at(records, k, gain)]
    stats = {k: mean_std(values(records, k, gain, key)) for k in ks}
    clip = (lambda y: min(y, top)) if top else (lambda y: y)
    ax.plot(ks, [clip(stats[k][0]) for k in ks], **style)
    for k in ks:
        seeded = len(runs_at(records, k, gain)) > 1
        ax.errorbar([k], [clip(stats[k][0])], [stats[k][1]] if seeded else None, marker='o', ms=5,
                    color=style['color'], mfc=style['color'] if seeded else 'white', capsize=3)
        if speed_limited(records, k, gain):
            ax.plot([k], [clip(stats[k][0])], 'o', ms=13, mfc='none', mec='red', mew=1.2)
    return stats


def plot(records, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    fig, (ax_loss, ax_head, ax_gain, ax_logits) = plt.subplots(1, 4, figsize=(17, 4.6))
    top = 2.12  # the loss axis stops here, so the learnable gains' ends are visible
    for i, gain in enumerate(GAINS):
        color = f'C{i}'
        losses = draw(ax_loss, records, gain, 'final_val_loss', top, color=color,
                      label=f'gain {gain}')
        for k, (loss, _) in losses.items():
            if loss > top:  # off the axis: an arrow at the top edge with the value
                ax_loss.annotate(f'{gain}: {loss:.2f}', (k, top), xytext=(k, top - 0.035),
                                 color=color, fontsize=7, ha='center',
                                 arrowprops=dict(arrowstyle='->', color=color))
            if any(map(collapsed, runs_at(records, k, gain))):
                ax_loss.plot([k], [min(loss, top)], 'kx', ms=8)
        draw(ax_head, records, gain, 'head.weight_rms', color=color)
        draw(ax_logits, records, gain, 'logits_rms', color=color)
        if gain != 'fixed':
            draw(ax_gain, records, gain, 'norm_out.gain_mean', color=color)
            ks = [k for k in S_FACTORS if runs_at(records, k, gain)]
            needed = [mean_std([needed_gain(records, r, k, gain)
                                for r in runs_at(records, k, gain)])[0] for k in ks]
            ax_gain.plot(ks, needed, color=color, ls='--', lw=1,
                         label=f"{gain}: needed for the k = 1 run's gain x RMS(W~)")
    centre = mean_std(values(records, 1, 'vector', 'head.weight_rms'))[0]
    ax_head.plot(S_FACTORS, [centre * k for k in S_FACTORS], 'k:', lw=1, label='∝ S (slope 1)')
    ax_gain.axhline(1 + reach(records), color='red', lw=0.8, ls=':',
                    label=f'1 + reach ({reach(records):.1f}): the most Adam can move it')
    ax_loss.set_ylim(1.88, top)
    for ax, title in ((ax_loss, 'final val loss (zoomed; arrows: off the axis)'),
                      (ax_head, "RMS of the head's W~"), (ax_gain, 'final norm gain (mean)'),
                      (ax_logits, 'RMS of the logits (first val batch)')):
        ax.set_title(title, fontsize=9)
        ax.set_xscale('log', base=2)
        ax.set_xticks(S_FACTORS, [label(k) for k in S_FACTORS])
        ax.set_xlabel('k = S of the LM head / S of the rest', fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in (ax_head, ax_gain, ax_logits):
        ax.set_yscale('log', base=2)
    seeds = sorted({r['seed'] for r in records})
    keys = [Line2D([], [], marker='o', color='gray',
                   label=f"filled: mean ± std, seeds {', '.join(map(str, seeds))}"),
            Line2D([], [], marker='o', color='gray', mfc='white', label='open: seed 1337 alone'),
            Line2D([], [], marker='o', ms=11, ls='', mfc='none', mec='red',
                   label='speed-limited: reach < 2 x distance'),
            Line2D([], [], marker='x', ls='', color='k', label="block 0's W_Q, W_K collapsed")]
    handles, _ = ax_loss.get_legend_handles_labels()
    ax_loss.legend(handles=handles + keys, fontsize=6.5, loc='upper right')
    ax_head.legend(fontsize=7)
    ax_gain.legend(fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# The block-0 Q/K collapse, its cause: one collapsed point (the vector gain at k = 4, seed 1337)
# again with one change each: the gains at the base LR; the embedding at wd 0.1 instead of 6;
# and unchanged on another seed (does it depend on the seed?).
COLLAPSE_CHANGES = {'gains at the base LR': (dict(lr_factors='head=4'), 1337),
                    'embedding at wd 0.1': (dict(wd_factors='embed=1,head=15'), 1337),
                    'unchanged, seed 1338': ({}, 1338)}


def collapse_check():
    """Run each change into collapse/; return {change: record}, the unchanged run included."""
    out = {'unchanged, seed 1337': runs_at(run_points(FIRST, []), 4, 'vector')[0]}
    for change, (flags, seed) in COLLAPSE_CHANGES.items():
        point = {**first_point(4, 'vector'), **flags}
        records = run_points(os.path.join(HERE, 'collapse'), [point], (seed,), FIRST_SWEEP)
        out[change] = [r for r in records if r['point'] == point and r['seed'] == seed][0]
    return out


def collapse_table(runs):
    lines = ["The vector gain at k = 4: block 0's W_Q and W_K RMS at the end, one change at a time",
             '', '| run | block 0 W_Q RMS | block 0 W_K RMS | blocks 1-3 W_Q RMS | final val |',
             '|---|---|---|---|---|']
    for change, r in runs.items():
        rms = [r['final'][f'blocks.{i}.attn.q.weight_rms'] for i in range(4)]
        lines.append(f"| {change} | {rms[0]:.2g} | {r['final']['blocks.0.attn.k.weight_rms']:.2g}"
                     f" | {', '.join(f'{x:.2g}' for x in rms[1:])} | {r['final_val_loss']:.4f} |")
    return '\n'.join(lines) + '\n'


# The second attempt (all_gains_5e-2/): the embedding at wd 0.1, every gain at 5e-2; stopped after
# the fixed gain's points and the scalar's up to k = 1, when block 0's Q/K had collapsed again
ALL_GAINS_POINTS = ([(head_point(k, 'fixed'), SEEDS.get(k, (1337,))) for k in S_FACTORS]
                    + [(head_point(k, 'scalar'), SEEDS.get(k, (1337,))) for k in (1 / 16, 1 / 4)]
                    + [(head_point(1, 'scalar'), (1337,))])


def all_gains_attempt():
    for point, seeds in ALL_GAINS_POINTS:
        run_points(ALL_GAINS, [point], seeds, ALL_GAINS_SWEEP)
    return run_points(ALL_GAINS, [])


def all_gains_table(records):
    lines = ["The embedding at wd 0.1 and every gain, the blocks' too, at 5e-2 (all_gains_5e-2/): "
             "block 0's W_Q and W_K RMS at the end", '',
             '| final gain | k | seed | block 0 W_Q, W_K RMS | collapsed | final val |',
             '|---|---|---|---|---|---|']
    for gain in GAINS:
        for k in S_FACTORS:
            for r in runs_at(records, k, gain):
                f = r['final']
                lines.append(f"| {gain} | {label(k)} | {r['seed']} | "
                             f"{f['blocks.0.attn.q.weight_rms']:.1e}, "
                             f"{f['blocks.0.attn.k.weight_rms']:.1e} | "
                             f"{'yes' if collapsed(r) else ''} | {r['final_val_loss']:.4f} |")
    return '\n'.join(lines) + '\n'


# The speed check: Adam moves the final gain by well under its LR a step (at k = 1/16, 16.8 of the
# reach 42.7) and at k <= 1 it still climbs at the end: the learnable gains at k = 1/16 and 1 again,
# at 3x the LR
FAST_GAIN_LR = 0.15
FAST = os.path.join(HERE, 'gain_lr_0.15')


def speed_check():
    points = [head_point(k, gain) for gain in ('scalar', 'vector') for k in (1 / 16, 1)]
    flags = SWEEP + ['--gain_lr', f'{FAST_GAIN_LR:g}']
    return [r for r in run_points(FAST, points, (1337, 1338), flags) if r['status'] == 'ok']


def speed_table(fast, records):
    lines = [f'The learnable final gain at lr {GAIN_LR:g} (the sweep) and {FAST_GAIN_LR:g}: final '
             'val loss and the gain at the end, per seed (1337, 1338)', '',
             f'| final gain | k | loss at {GAIN_LR:g} | loss at {FAST_GAIN_LR:g} | difference | '
             f'gain at {GAIN_LR:g} | gain at {FAST_GAIN_LR:g} |', '|---' * 7 + '|']
    for gain in ('scalar', 'vector'):
        for k in (1 / 16, 1):
            slow, quick = (values(r, k, gain, 'final_val_loss') for r in (records, fast))
            deltas = [b - a for a, b in zip(slow, quick)]
            gains = [', '.join(f'{g:.2f}' for g in values(r, k, gain, 'norm_out.gain_mean'))
                     for r in (records, fast)]
            lines.append(f"| {gain} | {label(k)} | {', '.join(f'{x:.4f}' for x in slow)} | "
                         f"{', '.join(f'{x:.4f}' for x in quick)} | {cell(deltas)} | "
                         f'{gains[0]} | {gains[1]} |')
    return '\n'.join(lines) + '\n'


def report(records, folder):
    figure = os.path.join(folder, 'projector_sweep.png')
    write_report(folder, tables(records), lambda: plot(records, figure))


if __name__ == '__main__' and sys.argv[1:] == ['collapse']:
    table = collapse_table(collapse_check()) + '\n' + all_gains_table(all_gains_attempt())
    with open(os.path.join(HERE, 'collapse', 'results.md'), 'w') as f:
        f.write(table)
    print(table)
elif __name__ == '__main__' and sys.argv[1:] == ['speed']:
    write_report(FAST, speed_table(speed_check(), sweep()), lambda: None)
elif __name__ == '__main__' and sys.argv[1:] == ['first']:
    report(first_sweep(), FIRST)
elif __name__ == '__main__':
    report(sweep(), HERE)
