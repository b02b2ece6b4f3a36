"""
Figures from train.py's log.jsonl files and sweep.py's results.json
(needs matplotlib: pip install matplotlib).

    # loss, RMS of each W~, each multiplier
    python experiments/plot.py curves out/run1 out/run2 --out curves.png
    # final val loss vs one flag, over seeds
    python experiments/plot.py sweep experiments/2x2_nanogpt_recipe/adamw/results.json \
        --x learning_rate
    # loss and ||W~|| vs S = sqrt(lr/wd)
    python experiments/plot.py equilibrium experiments/equilibrium/adamw_frozen/results.json \
        --out eq.png
    # multipliers in/out of grad clipping
    python experiments/plot.py clipping experiments/clipping --out clipping.png

Only this script imports matplotlib; training never needs it.
"""
import argparse
import json
import math
import os
import sys
from pathlib import Path
from collections import defaultdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root
from experiments import sweep  # noqa: E402
from experiments.sweep import mean_std  # noqa: E402

KINDS = ('embed', 'q', 'k', 'v', 'o', 'gate', 'up', 'down', 'head')  # the matrices by last name


def read_log(run_dir):
    """(evaluation lines, step lines) of a run's log.jsonl (sweep.read_log: one line if damaged)."""
    lines = sweep.read_log(run_dir)
    return [x for x in lines if 'val_loss' in x], [x for x in lines if 'val_loss' not in x]


def read_results(path):
    """The finished runs of a sweep's results.json; none: one line, exit 2."""
    runs = [r for r in sweep.read_results(path) if r['status'] == 'ok']
    if not runs:
        sweep.fail(f'{path} records no finished run: nothing to plot')
    return runs


def errorbar(ax, points, **style):
    """points {x: [values over seeds]} -> the mean with a std error bar at each x (without NaN);
    an x with one seed gets an open marker (seed_keys names them in a legend)."""
    stats = {x: mean_std(values) for x, values in sorted(points.items())}
    xs = [x for x, st in stats.items() if st]
    means, stds = [stats[x][0] for x in xs], [stats[x][1] for x in xs]
    line = ax.errorbar(xs, means, stds, marker='o', capsize=3, **style)[0]
    single = [x for x in xs if sum(v is not None and math.isfinite(v) for v in points[x]) == 1]
    ax.plot(single, [stats[x][0] for x in single], 'o', color=line.get_color(), mfc='white',
            zorder=line.get_zorder() + 0.1)  # over the filled marker


OPEN, FILLED, SQUARE = dict(marker='o', mfc='w'), dict(marker='o'), dict(marker='s')


def legend(ax, keys=(), **style):
    """The legend: a coloured line per label, then a gray marker per (label, marker style) key."""
    from matplotlib.lines import Line2D
    handles, labels = ax.get_legend_handles_labels()
    lines = [h[0] if isinstance(h, tuple) else h for h in handles]  # an errorbar's data line
    handles = [Line2D([], [], color=h.get_color(), ls=h.get_linestyle()) for h in lines]
    handles += [Line2D([], [], color='gray', ls='', **marker) for _, marker in keys]
    ax.legend(handles, labels + [label for label, _ in keys], **style)


def seed_keys(counts):
    """Legend keys for errorbar's markers, one per seed count: filled = mean ± std, open = 1."""
    return [(f'mean ± std, {n} seeds', FILLED) if n > 1 else ('1 seed', OPEN)
            for n in sorted(counts, reverse=True)]


def log_axis(ax, which, ticks=None):
    """A log-scale axis with plain numbers (at ticks, if given) and no crowded minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    getattr(ax, f'set_{which}scale')('log')
    axis = getattr(ax, f'{which}axis')
    if ticks is not None:
        axis.set_ticks(ticks)
    else:
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, ...
    axis.set_major_formatter(FuncFormatter(lambda value, _: f'{value:.3g}'))
    axis.set_minor_formatter(NullFormatter())


def mult_label(point):
    """'none', 's', 'r+c', 's+r+c', ... from a grid point's multiplier flags."""
    names = ('scalar_mult', 'row_mult', 'col_mult')
    on = [k[0] for k in names if point.get(k) in ('1', 'true', 'True')]
    return '+'.join(on) or 'none'


def figure(rows, columns, width=3.6, height=2.8):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
    return fig, axes


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f'saved {path}')


def plot_curves(runs, out):
    """One row per run: train/val loss, RMS of each W~, each scalar s (colour = matrix kind)."""
    fig, axes = figure(len(runs), 3)
    for row, run in zip(axes, runs):
        evals, _ = read_log(run)
        iters = [e['iter'] for e in evals]
        row[0].plot(iters, [e['train_loss'] for e in evals], label='train')
        row[0].plot(iters, [e['val_loss'] for e in evals], label='val')
        row[0].set_title(f'loss: {os.path.basename(os.path.normpath(run))}'[:60], fontsize=8)
        row[0].legend(fontsize=7)
        for ax, suffix, title in ((row[1], '.weight_rms', 'RMS of each W~'),
                                  (row[2], '.scalar_mult_mean', 'each s')):
            seen = set()
            for key in (k for k in evals[-1] if k.endswith(suffix)):
                kind = key[:-len(suffix)].split('.')[-1]
                color = f'C{KINDS.index(kind)}'
                label = None if kind in seen else kind  # one legend entry per kind
                ax.plot(iters, [e[key] for e in evals], color=color, lw=0.8, label=label)
                seen.add(kind)
            ax.set_title(title if seen else f'{title}: none', fontsize=8)
            if seen:
                ax.legend(fontsize=6, ncol=3)
        for ax in row:
            ax.set_xlabel('step', fontsize=8)
    save(fig, out)


def plot_sweep(paths, x, out, seed=None):
    """Final val loss vs flag x, one line per setting of the other flags; bars: std over seeds.

    Flags that change together with x (one axis, e.g. learning_rate:muon_lr) name no line of their
    own; those whose values differ from x's are written under x's ticks. seed: the line is that
    seed's runs alone (a ladder tuned on one seed), and beside each x run with more seeds (the
    ladder's chosen value) a square shows the mean ± std of all of them.
    """
    fig, axes = figure(1, len(paths), width=4.2, height=3.6)
    for ax, path in zip(axes[0], paths):
        every = read_results(path)
        runs = [r for r in every if seed is None or r['seed'] == seed]
        if not runs:
            sweep.fail(f'{path} records no finished run of seed {seed}')
        xs = {r['point'][x] for r in runs}
        follows_x = {k for k in runs[0]['point']  # k is a function of x
                     if len({(r['point'][x], r['point'].get(k)) for r in runs}) == len(xs)}
        under = [k for k in follows_x if any(r['point'].get(k) != r['point'][x] for r in runs)]
        lines = defaultdict(lambda: defaultdict(list))  # {label: {x: [final val loss]}}
        all_seeds = defaultdict(lambda: defaultdict(list))
        for r in every:
            point = r['point']
            flags = ', '.join(f'{k}={v}' for k, v in point.items()
                              if k not in follows_x and 'mult' not in k)
            label = ' '.join(filter(None, [mult_label(point), flags]))
            all_seeds[label][float(point[x])].append(r['final_val_loss'])
            if seed is None or r['seed'] == seed:
                lines[label][float(point[x])].append(r['final_val_loss'])
        seeds = sorted({r['seed'] for r in every})
        for i, (label, points) in enumerate(sorted(lines.items())):
            errorbar(ax, points, color=f'C{i}', label=label)
            for value, losses in all_seeds[label].items():
                if seed is not None and len(losses) > len(points[value]):
                    mean, std = mean_std(losses)
                    ax.errorbar([value * 1.04], [mean], [std], marker='s', capsize=3,
                                color=f'C{i}')
        ticks = {float(r['point'][x]): '\n'.join(r['point'][k] for k in [x] + under)
                 for r in runs}  # x as recorded, over the flags that move with it
        log_axis(ax, 'x', sorted(ticks))
        ax.set_xticks(sorted(ticks), [ticks[v] for v in sorted(ticks)])
        ax.set_xlabel(x + (f"\n(ticks: {x} over {', '.join(under)})" if under else ''),
                      fontsize=8)
        ax.set_ylabel('final val loss', fontsize=8)
        ax.set_title(os.path.basename(os.path.dirname(path)), fontsize=8)
        keys = seed_keys({len(v) for p in lines.values() for v in p.values()})
        if seed is not None:
            keys = [(f'seed {seed}', OPEN), (f'mean ± std, seeds {seeds[0]}-{seeds[-1]},'
                                             f'\nat the chosen {x}', SQUARE)]
        bottom, top = ax.get_ylim()
        ax.set_ylim(top=top + 0.8 * (top - bottom))  # room for the legend above the lines
        legend(ax, keys, fontsize=7, loc='upper center', ncol=2)
    save(fig, out)


def equilibrium_scale(point):
    """S = sqrt(lr / wd) of the hidden matrices, from the grid point's (matrix|muon)_lr and _wd."""
    prefix = 'muon' if 'muon_lr' in point else 'matrix'
    return math.sqrt(float(point[f'{prefix}_lr']) / float(point[f'{prefix}_wd']))


def hidden_mean(final, suffix):
    """Mean of an observable (e.g. weight_rms) over the hidden matrices (not embedding or head)."""
    values = [v for k, v in final.items() if k.startswith('blocks.') and k.endswith(suffix)]
    return sum(values) / len(values) if values else None


def plot_equilibrium(paths, out):
    """One row per sweep: final val loss, RMS of W~ and of W = s r W~ c, each vs S = sqrt(lr/wd)."""
    fig, axes = figure(len(paths), 3)
    for row, path in zip(axes, paths):
        by_config = defaultdict(lambda: defaultdict(list))
        pairs = {}  # S: 'lr, wd' of the hidden matrices
        for r in read_results(path):
            by_config[mult_label(r['point'])][equilibrium_scale(r['point'])].append(r)
            prefix = 'muon' if 'muon_lr' in r['point'] else 'matrix'
            pairs[equilibrium_scale(r['point'])] = ', '.join(
                r['point'][f'{prefix}_{k}'] for k in ('lr', 'wd'))
        for i, (label, points) in enumerate(by_config.items()):
            xs = sorted(points)
            for ax, value in ((row[0], lambda r: r['final_val_loss']),
                              (row[1], lambda r: hidden_mean(r['final'], '.weight_rms')),
                              (row[2], lambda r: hidden_mean(r['final'], '.effective_rms')
                               or hidden_mean(r['final'], '.weight_rms'))):
                values = {x: [value(r) for r in points[x]] for x in xs}
                errorbar(ax, values, color=f'C{i}', label=label)
        name = os.path.basename(os.path.dirname(path))
        row[0].set_title(f'{name}: final val loss', fontsize=8)
        row[1].set_title('RMS of W~ (mean over hidden matrices)', fontsize=8)
        row[2].set_title('RMS of W = s r W~ c (mean over hidden matrices)', fontsize=8)
        xs = sorted({x for points in by_config.values() for x in points})
        reference = by_config['none'][xs[0]] if 'none' in by_config else None
        if reference:  # a line proportional to S through the first 'none' mean: ||W~|| ~ S
            y0 = mean_std([hidden_mean(r['final'], '.weight_rms') for r in reference])[0]
            row[1].plot(xs, [y0 * x / xs[0] for x in xs], 'k:', lw=1, label='∝ S')
        counts = {len(runs) for points in by_config.values() for runs in points.values()}
        for ax in row:
            log_axis(ax, 'x', xs)
            ax.set_xticks(xs, [f'{x:.3g}\n{pairs[x]}' for x in xs])  # S over its (lr, wd)
            ax.set_xlabel('S = sqrt(lr / wd) of the hidden matrices\n(ticks: S over lr, wd)',
                          fontsize=8)
            # what the markers mean, once per row: every panel of the row draws the same runs
            legend(ax, seed_keys(counts) if ax is row[0] else (), fontsize=7)
        for ax in row[1:]:
            log_axis(ax, 'y')
    save(fig, out)


def plot_clipping(sweep_dir, out, early=300):
    """Multipliers excluded from (rule 2) vs included in the global clipping: early gradient
    norms, val loss gap."""
    runs = read_results(os.path.join(sweep_dir, 'results.json'))
    logs = {r['name']: read_log(sweep.run_folder(sweep_dir, r)) for r in runs}
    fig, axes = figure(1, 2, width=4.5)
    data = dict(early_grad_norms={}, val_loss_gap={})
    first = min(r['seed'] for r in runs)  # the left panel shows this seed alone
    for r in runs:
        if r['seed'] != first:
            continue
        included = r['point']['clip_multipliers'] in ('1', 'true', 'True')
        steps = [x for x in logs[r['name']][1] if x['iter'] <= early]
        style = dict(color='C3' if included else 'C0')
        label = 'included in clipping' if included else 'excluded (rule 2)'
        iters = [x['iter'] for x in steps]
        rest = [x['grad_norm'] for x in steps]
        multipliers = [x['mult_grad_norm'] for x in steps]
        axes[0, 0].plot(iters, rest, **style, label=f'{label}: the rest')
        axes[0, 0].plot(iters, multipliers, '--', **style, label=f'{label}: multipliers')
        data['early_grad_norms'][label] = dict(iters=iters, rest=rest, multipliers=multipliers)
    axes[0, 0].axhline(1.0, color='k', lw=0.8, ls=':', label='clip threshold')
    axes[0, 0].set_yscale('log')
    axes[0, 0].set_title(f'pre-clip gradient norms, first {early} steps, seed {first}', fontsize=8)
    top = axes[0, 0].get_ylim()[1]
    axes[0, 0].set_ylim(top=top * 30)  # room for the legend above the curves
    axes[0, 0].legend(fontsize=6, loc='upper right', ncol=2)
    for seed in sorted({r['seed'] for r in runs}):
        pair = {r['point']['clip_multipliers'] in ('1', 'true', 'True'): logs[r['name']][0]
                for r in runs if r['seed'] == seed}
        if len(pair) == 2:
            gap = [(a['iter'], b['val_loss'] - a['val_loss'])
                   for a, b in zip(pair[False], pair[True])]
            axes[0, 1].plot(*zip(*gap), marker='.', label=f'seed {seed}')
            data['val_loss_gap'][seed] = gap
    axes[0, 1].axhline(0.0, color='k', lw=0.8)
    axes[0, 1].set_title('val loss, included minus excluded (> 0: excluding is better)', fontsize=8)
    axes[0, 1].legend(fontsize=7)
    for ax in axes[0]:
        ax.set_xlabel('step', fontsize=8)
    with open(os.path.splitext(out)[0] + '.json', 'w') as f:
        json.dump(data, f)
    save(fig, out)


def main(argv):
    parser = argparse.ArgumentParser(prog='plot.py', description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    curves = commands.add_parser('curves', help='train.py --out_dir folders -> training curves')
    curves.add_argument('runs', nargs='+')
    sweep = commands.add_parser('sweep', help="sweep.py results.json -> final val loss vs one flag")
    sweep.add_argument('results', nargs='+')
    sweep.add_argument('--x', required=True, help='the flag on the x axis (log scale)')
    sweep.add_argument('--seed', type=int, help="plot this seed's runs alone")
    equilibrium = commands.add_parser('equilibrium',
                                      help='equilibrium sweeps -> loss and norms vs S')
    equilibrium.add_argument('results', nargs='+')
    clipping = commands.add_parser('clipping', help='a sweep over --clip_multipliers -> '
                                                    'gradient norms, loss gap')
    clipping.add_argument('sweep_dir')
    clipping.add_argument('--early', type=int, default=300, help='steps of gradient norms to show')
    for command in (curves, sweep, equilibrium, clipping):
        command.add_argument('--out', help='the PNG to write (default: <command>.png beside '
                                           'the first run or results.json given)')
    args = parser.parse_args(argv)
    given = getattr(args, 'runs', None) or getattr(args, 'results', None) or [args.sweep_dir]
    first = given[0]  # the figure goes beside it unless --out says where
    folder = first if os.path.isdir(first) else os.path.dirname(os.path.abspath(first))
    args.out = args.out or os.path.join(folder, f'{args.command}.png')
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print('plot.py: error: matplotlib is not installed (pip install matplotlib)',
              file=sys.stderr)
        sys.exit(2)
    if args.command == 'curves':
        plot_curves(args.runs, args.out)
    elif args.command == 'sweep':
        plot_sweep(args.results, args.x, args.out, args.seed)
    elif args.command == 'equilibrium':
        plot_equilibrium(args.results, args.out)
    else:
        plot_clipping(args.sweep_dir, args.out, args.early)


if __name__ == '__main__':
    main(sys.argv[1:])
