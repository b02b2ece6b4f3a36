"""
The paper's MLP sweep (Sec. 3, App. B, Figs. 8-9), at small scale: move the equilibrium scale
S = sqrt(lr / wd) of W_gate, W_up and W_down alone, at fixed lr * wd, the blocks' RMSNorm gains
frozen at 1 (the paper's), in four configurations: Adam, Adam + a learnable scalar on each of the
three matrices, Muon, Muon + scalars (the scalars without weight decay, as in the paper).

    python experiments/mlp_sweep/run.py         # resumable: the runs results.json holds are skipped
    python experiments/mlp_sweep/run.py reach   # the scalars at 5e-2 where 2e-2 is too slow

Writes <config>/results.json (one record per run), results.md (the tables) and mlp_sweep.png.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from experiments.recipe import factor_sum, write_report  # noqa: E402
from experiments.sweep import mean_std, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = ['--dataset', 'shakespeare_char', '--device', 'cpu', '--n_layer', '4', '--n_head', '4',
         '--n_embd', '128', '--block_size', '64', '--batch_size', '12', '--sample_tokens', '0']
# 1000 steps: warmup 100, constant, then x8 exponential decay over the last sixth (the paper's
# shape). The LR factors sum to 853.7 (factor_sum): the hidden matrices (lr * wd = 0.012) last
# 10.2 equilibrium times 1/(lr wd); the embedding and head (lr 2e-3, wd 0.1) only 0.17.
# z-loss 1e-4 (the paper's); the final norm's gain learns, at 1e-2.
RUN = ['--max_iters', '1000', '--schedule', 'wsd', '--warmup_iters', '100', '--decay_frac',
       '0.167', '--learning_rate', '2e-3', '--min_lr', '2.5e-4', '--eval_interval', '100',
       '--eval_iters', '10', '--log_interval', '100', '--freeze_gains', '--gain_lr', '1e-2',
       '--z_loss', '1e-4']
ADAM = ['--matrix_lr', '2e-3', '--matrix_wd', '6']  # hidden matrices: S = 0.018, lr * wd = 0.012
MUON = ['--optimizer', 'muon', '--muon_scale', 'match_rms_adamw', '--muon_lr', '2e-3',
        '--muon_wd', '6']  # the same S: Muon's update RMS matched to AdamW's
# one scalar on each MLP matrix, no WD (the paper's), lr 2e-2 (the paper's 1e-2 in a far longer
# run): its reach, 2e-2 x 853.7 = 17.1, was twice the ~7 the first version's k = 1/4 scalars needed;
# here Adam's need 21 there (speed-limited; `reach` runs them at 5e-2)
SCALARS = ['--scalar_mult', '--mult_placement', 'mlp', '--mult_lr', '2e-2', '--mult_wd', '0']
MULT_LR = 2e-2
CONFIGS = {'adam': ADAM, 'adam+scalars': ADAM + SCALARS,
           'muon': MUON, 'muon+scalars': MUON + SCALARS}
S_FACTORS = (0.25, 0.5, 1, 2, 4)  # S of gate, up and down relative to the rest: lr x k, wd / k
SEEDS = {0.25: (1337, 1338), 1: (1337, 1338), 4: (1337, 1338)}  # 2 seeds at the centre and ends
BASE_S = (2e-3 / 6) ** 0.5
MLP = ('gate', 'up', 'down')


def mlp_point(k):
    """The flags that scale S of the three MLP matrices by k at fixed lr * wd."""
    return dict(lr_factors=','.join(f'{m}={k:g}' for m in MLP),
                wd_factors=','.join(f'{m}={1 / k:g}' for m in MLP))


def sweep():
    """{config: [its records]}, running what is missing."""
    records = {}
    for name, flags in CONFIGS.items():
        for k in S_FACTORS:
            run_points(os.path.join(HERE, name), [mlp_point(k)], SEEDS.get(k, (1337,)),
                       MODEL + RUN + flags)
        records[name] = [r for r in run_points(os.path.join(HERE, name), []) if r['status'] == 'ok']
    return records


def runs_at(records, k):
    return sorted((r for r in records if r['point'] == mlp_point(k)), key=lambda r: r['seed'])


def per_seed(records, k, value):
    """[value(record) for each seed run at k]."""
    return [value(r) for r in runs_at(records, k)]



REACH = MULT_LR * factor_sum(MODEL + RUN)  # Adam moves a scalar by about its lr a step


def mlp_mean(final, suffix):
    """The mean of one observable over every block's gate, up and down."""
    values = [v for key, v in final.items() if '.mlp.' in key and key.endswith(suffix)]
    return sum(values) / len(values)


def scalar_distance(records, k):
    """(travelled, needed): the farthest any scalar of the runs at k went from its start 1, and the
    farthest one would have to go to bring its matrix's W = s W~ to that matrix's W at k = 1 (the
    same seed). None without scalars."""
    centre = {r['seed']: r['final'] for r in runs_at(records, 1)}
    travelled, needed = [], []
    for r in runs_at(records, k):
        final, at_1 = r['final'], centre[r['seed']] if r['seed'] in centre else centre[1337]
        for key in (key for key in final if key.endswith('.scalar_mult_mean')):
            matrix = key[:-len('.scalar_mult_mean')]
            travelled.append(abs(final[key] - 1))
            needed.append(abs(at_1[f'{matrix}.effective_rms'] / final[f'{matrix}.weight_rms'] - 1))
    return (max(travelled), max(needed)) if travelled else None


def speed_limited(records, k, reach=REACH):
    """Reach below twice the distance (travelled or needed): the point measures the scalars'
    speed, not the method."""
    distance = scalar_distance(records, k)
    return distance is not None and reach < 2 * max(distance)


def cell(values, digits=4):
    mean, std = mean_std(values)
    return f'{mean:.{digits}f}' + (f' ± {std:.{digits}f}' if len(values) > 1 else '')


def tables(records):
    header = '| configuration | ' + ' | '.join(f'S = {k:g} x ({BASE_S * k:.4f})'
                                               for k in S_FACTORS) + ' | spread of the means |'
    lines = ['Final val loss: mean ± std over seeds 1337 and 1338 where a std is given, else seed '
             '1337 alone.', '', header, '|---' * (len(S_FACTORS) + 2) + '|']
    for name, runs in records.items():
        losses = {k: per_seed(runs, k, lambda r: r['final_val_loss']) for k in S_FACTORS}
        cells = [cell(losses[k]) + (' (speed-limited)' if speed_limited(runs, k) else '')
                 for k in S_FACTORS]
        means = [mean_std(v)[0] for v in losses.values()]
        lines.append(f'| {name} | ' + ' | '.join(cells) + f' | {max(means) - min(means):.4f} |')
    lines += ['', 'Scalars minus none, paired by seed (1337, 1338):', '',
              '| optimizer | k | per seed | mean ± std |', '|---|---|---|---|']
    for optimizer in ('adam', 'muon'):
        for k in SEEDS:
            none = per_seed(records[optimizer], k, lambda r: r['final_val_loss'])
            mult = per_seed(records[f'{optimizer}+scalars'], k, lambda r: r['final_val_loss'])
            deltas = [b - a for a, b in zip(none, mult)]
            lines.append(f"| {optimizer} | {k:g} | {', '.join(f'{d:+.4f}' for d in deltas)} | "
                         f'{mean_std(deltas)[0]:+.4f} ± {mean_std(deltas)[1]:.4f} |')
    lines += ['', f'The scalars\' reach (lr {MULT_LR:g} x sum of LR factors '
              f'{factor_sum(MODEL + RUN):.1f}) = '
              f'{REACH:.2f}, against the farthest any scalar travelled from 1 and would need to '
              'travel (to its matrix\'s W at k = 1, same seed); speed-limited where the reach is '
              'below twice the larger:', '',
              '| configuration | k | travelled | needed | 2 x distance / reach | |',
              '|---' * 6 + '|']
    for name in ('adam+scalars', 'muon+scalars'):
        for k in S_FACTORS:
            travelled, needed = scalar_distance(records[name], k)
            flag = 'speed-limited' if speed_limited(records[name], k) else ''
            lines.append(f'| {name} | {k:g} | {travelled:.2f} | {needed:.2f} | '
                         f'{2 * max(travelled, needed) / REACH:.2f} | {flag} |')
    lines += ['', 'Every run: RMS of W~ and W = s W~ (means over the 12 MLP matrices), the '
              "scalars, each block's output RMS (first val batch), RMS of W_O (mean over "
              'blocks):', '',
              '| configuration | k | seed | final val | W~ | W | s (min-max) | block outputs 0-3 '
              '| W_O |', '|---' * 9 + '|']
    for name, runs in records.items():
        for k in S_FACTORS:
            for r in runs_at(runs, k):
                f = r['final']
                scalars = [v for key, v in f.items() if key.endswith('.scalar_mult_mean')]
                w = f"{mlp_mean(f, 'effective_rms'):.4f}" if scalars else ''
                s = f'{min(scalars):.2f}-{max(scalars):.2f}' if scalars else ''
                outputs = ', '.join(f"{f[f'blocks.{i}.output_rms']:.3f}" for i in range(4))
                w_o = sum(f[f'blocks.{i}.attn.o.weight_rms'] for i in range(4)) / 4
                lines.append(f"| {name} | {k:g} | {r['seed']} | {r['final_val_loss']:.4f} | "
                             f"{mlp_mean(f, 'weight_rms'):.4f} | {w} | {s} | {outputs} | "
                             f'{w_o:.4f} |')
    return '\n'.join(lines) + '\n'


def draw(ax, values, limited=(), **style):
    """values {k: [one value per seed]}: the means joined by a line; a filled marker and a std bar
    where two seeds ran, an open marker where one did; a red ring on speed-limited points."""
    ks = [k for k in S_FACTORS if values.get(k)]
    stats = {k: mean_std(values[k]) for k in ks}
    ax.plot(ks, [stats[k][0] for k in ks], **style)
    for k in ks:
        seeded = len(values[k]) > 1
        ax.errorbar([k], [stats[k][0]], [stats[k][1]] if seeded else None, marker='o', ms=5,
                    color=style['color'], mfc=style['color'] if seeded else 'white', capsize=3)
        if k in limited:
            ax.plot([k], [stats[k][0]], 'o', ms=13, mfc='none', mec='red', mew=1.2)


def plot(records, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.2))
    (ax_loss, ax_rms, ax_mult, ax_o), outputs = axes
    for i, (name, runs) in enumerate(records.items()):
        style = dict(color=f'C{i // 2}', ls='-' if 'scalars' in name else '--')
        limited = [k for k in S_FACTORS if speed_limited(runs, k)]
        draw(ax_loss, {k: per_seed(runs, k, lambda r: r['final_val_loss']) for k in S_FACTORS},
             limited, label=name, **style)
        draw(ax_rms, {k: per_seed(runs, k, lambda r: mlp_mean(r['final'], 'weight_rms'))
                      for k in S_FACTORS}, limited, **style)
        w_o = {k: per_seed(runs, k, lambda r: sum(r['final'][f'blocks.{b}.attn.o.weight_rms']
                                                  for b in range(4)) / 4) for k in S_FACTORS}
        draw(ax_o, w_o, limited, **style)
        if 'scalars' in name:
            draw(ax_mult, {k: per_seed(runs, k, lambda r: mlp_mean(r['final'], 'scalar_mult_mean'))
                           for k in S_FACTORS}, limited, **style)
        ax = outputs[i]
        for block in range(4):
            draw(ax, {k: per_seed(runs, k, lambda r: r['final'][f'blocks.{block}.output_rms'])
                      for k in S_FACTORS}, limited, color=f'C{block + 4}', label=f'block {block}')
        ax.set_title(f'{name}: RMS of each block\'s output', fontsize=9)
        ax.set_yscale('log', base=2)
        ax.set_ylim(2 ** -6, 2 ** 2)
    rms_centre = mean_std(per_seed(records['adam'], 1,
                                   lambda r: mlp_mean(r['final'], 'weight_rms')))[0]
    ax_rms.plot(S_FACTORS, [rms_centre * k for k in S_FACTORS], 'k:', lw=1, label='∝ S (slope 1)')
    ax_mult.axhline(1 + REACH, color='red', lw=0.8, ls=':',
                    label=f'1 + reach ({REACH:.2f}): the most Adam can move it')
    ax_mult.plot(S_FACTORS, [1 / k for k in S_FACTORS], 'k:', lw=1, label='∝ 1/S (slope -1)')
    for ax, title in ((ax_loss, 'final val loss'), (ax_rms, 'RMS of W~ (mean over the MLP)'),
                      (ax_mult, 'learned scalar s (mean over the MLP)'),
                      (ax_o, 'RMS of W_O (mean over blocks): not swept')):
        ax.set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xscale('log', base=2)
        ax.set_xticks(S_FACTORS, [f'{k:g}' for k in S_FACTORS])
        ax.set_xlabel('k = S of gate, up, down / S of the rest', fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in (ax_rms, ax_mult, ax_o):
        ax.set_yscale('log', base=2)
    keys = [Line2D([], [], marker='o', color='gray', label='filled: mean ± std, seeds 1337, 1338'),
            Line2D([], [], marker='o', color='gray', mfc='white', label='open: seed 1337 alone'),
            Line2D([], [], marker='o', ms=11, ls='', mfc='none', mec='red',
                   label='speed-limited: reach < 2 x distance')]
    handles, _ = ax_loss.get_legend_handles_labels()
    ax_loss.legend(handles=handles + keys, fontsize=6.5)
    ax_rms.legend(fontsize=7)
    ax_mult.legend(fontsize=7)
    outputs[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# The reach check: the scalars at 5e-2 (reach 42.7) where 2e-2 is too slow (k = 1/4), at the other
# end, where Adam + scalars still lose, and at the centre for reference; seeds 1337 and 1338
CHECK_K = (0.25, 1, 4)
FAST_LR = 5e-2
CHECK = os.path.join(HERE, 'mult_lr_5e-2')


def reach_check():
    """{config: [its records at 5e-2]}, running what is missing."""
    records = {}
    for name in ('adam+scalars', 'muon+scalars'):
        flags = MODEL + RUN + CONFIGS[name] + ['--mult_lr', f'{FAST_LR:g}']
        runs = run_points(os.path.join(CHECK, name), [mlp_point(k) for k in CHECK_K],
                          (1337, 1338), flags)
        records[name] = [r for r in runs if r['status'] == 'ok']
    return records


def check_table(fast, records):
    reach = FAST_LR * factor_sum(MODEL + RUN)
    lines = [f'The scalars at lr {MULT_LR:g} (reach {REACH:.1f}) and {FAST_LR:g} (reach '
             f'{reach:.1f}): final val loss per seed (1337, 1338); the farthest scalar\'s distance '
             '(travelled, needed, as in results.md)', '',
             '| configuration | k | at 2e-2 | at 5e-2 | 5e-2 minus 2e-2 | distance at 5e-2 | |',
             '|---|---|---|---|---|---|---|']
    for name in fast:
        for k in CHECK_K:
            slow = per_seed(records[name], k, lambda r: r['final_val_loss'])
            quick = per_seed(fast[name], k, lambda r: r['final_val_loss'])
            deltas = [b - a for a, b in zip(slow, quick)]
            travelled, needed = scalar_distance(fast[name], k)
            flag = 'speed-limited' if speed_limited(fast[name], k, reach) else ''
            lines.append(f"| {name} | {k:g} | {', '.join(f'{x:.4f}' for x in slow)} | "
                         f"{', '.join(f'{x:.4f}' for x in quick)} | {cell(deltas)} | "
                         f'{travelled:.2f}, {needed:.2f} | {flag} |')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__' and sys.argv[1:] == ['reach']:
    write_report(CHECK, check_table(reach_check(), sweep()), lambda: None)
elif __name__ == '__main__':
    records = sweep()
    write_report(HERE, tables(records), lambda: plot(records, os.path.join(HERE, 'mlp_sweep.png')))
