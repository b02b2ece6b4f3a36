"""
Symmetry drift (paper Sec. 4.1, Fig. 4), the reason for rule 1. With row multipliers on both W_Q
and W_K only the product (s r)_Q,i (s r)_K,i of a row's two scales reaches the attention logits, so
their ratio is free to wander; a scale that feeds only into an RMSNorm (the residual branches) is
free to grow. Without weight decay on the multipliers nothing holds them; a light one (2e-3) should.

The paper's LRM (--row_mult --col_mult) under bfloat16 autocast with z-loss 1e-4, as in the paper,
with the multipliers' weight decay 0 or 2e-3 (rule 1), two seeds each, and 0.1 (does the metric
respond to a weight decay?) on the first seed. The run is sized so that 2e-3 acts:
mult_lr * mult_wd * sum_t factor_t = 5e-2 * 2e-3 * 10,790 = 1.08 multiplier equilibrium times
(mult_equilibrium_times below computes it). log.jsonl has, per layer, the median and IQR over
the rows of log10 |(s r)_Q / (s r)_K| and of log10 |(s r)_Q (s r)_K|, and the RMS of the attention
and MLP branch outputs; at the end each row's ratio and product come from the final checkpoint.

    python experiments/symmetry_drift/run.py     # resumable: recorded runs are skipped
    python experiments/symmetry_drift/run.py 1338 &  python experiments/symmetry_drift/run.py 1337
                                                 # two side by side, one seed each (2 cores)

Writes results.json (one record per run), trajectories.json and rows.json (the plotted numbers),
results.md and symmetry_drift.png.
"""
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from experiments.recipe import factor_sum  # noqa: E402
from experiments.sweep import read_checkpoint, read_log, run_folder, run_points  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = ['--dataset', 'shakespeare_char', '--device', 'cpu', '--n_layer', '4', '--n_head', '4',
         '--n_embd', '128', '--block_size', '64', '--batch_size', '12', '--sample_tokens', '0']
# 12,000 steps of the paper's schedule (warmup 100, constant, x8 decay over the last sixth):
# sum_t factor_t = 10,790. Hidden matrices at lr 2e-3, wd 6: 129 equilibrium times; embedding and
# head at wd 0.1: 2.2; the RMSNorm gains at lr 2e-3 too. The multipliers at lr 5e-2: their reach
# is 540, and 2e-3 acts for 1.08 of their equilibrium times 1 / (lr wd).
STEPS, MULT_LR = 12000, 5e-2
RUN = ['--max_iters', str(STEPS), '--schedule', 'wsd', '--warmup_iters', '100',
       '--decay_frac', '0.167', '--learning_rate', '2e-3', '--min_lr', '2.5e-4',
       '--matrix_lr', '2e-3', '--matrix_wd', '6', '--gain_lr', '2e-3', '--row_mult', '--col_mult',
       '--mult_lr', str(MULT_LR), '--dtype', 'bfloat16', '--z_loss', '1e-4',
       '--eval_interval', '400', '--eval_iters', '10', '--log_interval', '400']
POINTS = [dict(mult_wd=wd) for wd in ('0', '2e-3', '0.1')]
SEEDS = (1337, 1338)  # wd 0.1 (the check that the metric responds) on the first alone
WATCHED = ('qk_log_ratio_median', 'qk_log_ratio_iqr', 'qk_log_product_median',
           'qk_log_product_iqr', 'attn.output_rms', 'mlp.output_rms')


def mult_equilibrium_times(mult_wd):
    """mult_lr * mult_wd * sum_t factor_t: the multipliers' equilibrium times the run lasts."""
    return MULT_LR * mult_wd * factor_sum(MODEL + RUN)


def trajectories(records):
    """{run name: {'iter': [...], 'val_loss': [...], observable: [...]}} from each run's log."""
    out = {}
    for r in records:
        evals = [line for line in read_log(run_folder(HERE, r)) if 'val_loss' in line]
        keys = [k for k in evals[-1] if any(k.endswith(w) for w in WATCHED)]
        out[r['name']] = {k: [e[k] for e in evals] for k in ['iter', 'val_loss'] + keys}
    return out


def final_rows(record):
    """Each row's log10 |ratio| and log10 |product| of (s r)_Q and (s r)_K, every layer, at the end
    (Fig. 4a), from the run's final checkpoint."""
    ckpt = read_checkpoint(run_folder(HERE, record))
    state, rows = ckpt['model'], {'log_ratio': [], 'log_product': []}
    for i in range(ckpt['model_config']['n_layer']):
        q = state[f'blocks.{i}.attn.q.row_mult'].float()  # no scalar multipliers in this study
        k = state[f'blocks.{i}.attn.k.row_mult'].float()
        rows['log_ratio'] += (q / k).abs().log10().tolist()
        rows['log_product'] += (q * k).abs().log10().tolist()
    return rows


def layer_median(track, key, n=-1):
    """The median over the layers of blocks.<i>.<key> at evaluation n."""
    values = [v[n] for k, v in track.items() if k.startswith('blocks.') and k.endswith(key)]
    return statistics.median(values)


def table(records, tracks):
    lines = ['| multiplier wd | seed | multiplier equilibrium times | final val loss | '
             'IQR of log10 Q/K ratio (median over layers) | median log10 Q K product | '
             'RMS attention / MLP branch output (median over layers) |',
             '|---|---|---|---|---|---|---|']
    for r in sorted(records, key=lambda r: (float(r['point']['mult_wd']), r['seed'])):
        t, wd = tracks[r['name']], r['point']['mult_wd']
        lines.append(f"| {wd} | {r['seed']} | {mult_equilibrium_times(float(wd)):.2f} | "
                     f"{r['final_val_loss']:.4f} | "
                     f"{layer_median(t, 'attn.qk_log_ratio_iqr'):.3f} | "
                     f"{layer_median(t, 'attn.qk_log_product_median'):.3f} | "
                     f"{layer_median(t, 'attn.output_rms'):.3f} / "
                     f"{layer_median(t, 'mlp.output_rms'):.3f} |")
    return '\n'.join(lines) + '\n'


def plot(records, tracks, rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 5, figsize=(21, 3.8))
    colour = {'0': 'C3', '2e-3': 'C0', '0.1': 'C2'}
    for r in records:
        t, wd = tracks[r['name']], r['point']['mult_wd']
        style = dict(color=colour[wd], ls='-' if r['seed'] == SEEDS[0] else '--',
                     label=f"wd {wd}, seed {r['seed']}")
        if r['seed'] == SEEDS[0] and wd != '0.1':  # Fig. 4a: wd 0 against 2e-3, one seed
            axes[0].scatter(rows[r['name']]['log_product'], rows[r['name']]['log_ratio'], s=6,
                            alpha=0.5, color=colour[wd], label=f'wd {wd}')
        n_evals = range(len(t['iter']))
        axes[1].plot(t['iter'], [layer_median(t, 'attn.qk_log_ratio_iqr', n) for n in n_evals],
                     **style)
        for ax, branch in ((axes[2], 'attn.output_rms'), (axes[3], 'mlp.output_rms')):
            # Fig. 4b: the median over the layers, their IQR as a band (the first seed's)
            per_layer = [[v[n] for k, v in t.items() if k.endswith(branch)] for n in n_evals]
            ax.plot(t['iter'], [statistics.median(v) for v in per_layer], **style)
            if r['seed'] == SEEDS[0]:
                quartiles = [statistics.quantiles(v, n=4) for v in per_layer]
                ax.fill_between(t['iter'], [q[0] for q in quartiles], [q[2] for q in quartiles],
                                color=colour[wd], alpha=0.15)
        axes[4].plot(t['iter'], t['val_loss'], **style)
    axes[0].set_xlabel('log10 |(s r)_Q (s r)_K|, each row of every layer')
    axes[0].set_ylabel('log10 |(s r)_Q / (s r)_K|')
    axes[0].set_title('Fig. 4a at the end: ratio against product', fontsize=9)
    axes[1].set_title('IQR over rows of log10 Q/K ratio\n(median over layers)', fontsize=9)
    for ax, branch in ((axes[2], 'attention'), (axes[3], 'MLP')):
        ax.set_title(f'RMS of the {branch} branch output\n(median over layers; IQR band: seed '
                     f'{SEEDS[0]})', fontsize=9)
        ax.set_yscale('log')
    axes[4].set_title('val loss', fontsize=9)
    axes[4].set_ylim(top=2.4)
    for ax in axes[1:]:
        ax.set_xlabel('iter')
    axes[0].legend(fontsize=7)
    axes[4].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == '__main__':
    for seed in [int(s) for s in sys.argv[1:]] or SEEDS:  # each wd at one seed, then the next
        records = run_points(HERE, POINTS if seed == SEEDS[0] else POINTS[:2], (seed,), MODEL + RUN)
    records = [r for r in records if r['status'] == 'ok']
    tracks = trajectories(records)
    rows = {r['name']: final_rows(r) for r in records}
    for name, data in (('trajectories.json', tracks), ('rows.json', rows)):
        with open(os.path.join(HERE, name), 'w') as f:
            json.dump(data, f)
    with open(os.path.join(HERE, 'results.md'), 'w') as f:
        f.write(table(records, tracks))
    print(table(records, tracks))
    try:
        plot(records, tracks, rows, os.path.join(HERE, 'symmetry_drift.png'))
    except ImportError:
        print('no figure: pip install matplotlib')
