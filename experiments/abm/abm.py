"""
Adam Brownian motion (paper sec. 3, Fig. 1): does weight decay, not the data, set the matrix norms?

Take a finished run, build a fresh model with its settings, and feed pure i.i.d. N(0, 1) "gradients"
through the very same parameter groups, optimizer, clipping and LR schedule (train.py's own build(),
clip_gradients() and lr_factor()). Then compare, over training, the RMS of each W~ in the real run
with its noise-driven twin. The paper: they coincide at strong weight decay and are close at weak
weight decay; the learnable multipliers follow nothing like their noise twins (they carry signal).

    python abm.py RUN_DIR [RUN_DIR ...] --out assets/abm.png

Each RUN_DIR is a train.py --out_dir (ckpt.pt for the settings, log.jsonl for the real
trajectories). One row of panels per run: a few matrices' RMS (real solid, noise dashed), then
their scalar multipliers. The plotted numbers go to the same path with .json, so the figure can be
checked without rerunning.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
import guards  # noqa: E402
import train  # noqa: E402
from experiments.sweep import read_checkpoint, read_log  # noqa: E402
from runtime import load_checkpoint  # noqa: E402

MATRICES = ('blocks.0.attn.q', 'blocks.0.mlp.up', 'blocks.-1.mlp.down')  # -1: the last block


def real_trajectories(run_dir):
    """{iter: eval line} from the run's log.jsonl evaluation lines."""
    return {line['iter']: line for line in read_log(run_dir) if 'val_loss' in line}


def brownian_motion(s, vocab_size, log_iters, seed=0):
    """Train a fresh model of settings s on pure noise; {iter: model.observables()} at log_iters."""
    torch.manual_seed(seed)
    model, groups, optimizer = train.build(s, vocab_size, torch.device('cpu'))
    trainable = [p for g in groups for p in g['params']]
    trajectory = {0: model.observables()}
    for it in range(max(log_iters)):
        for g in optimizer.param_groups:
            g['lr'] = g['initial_lr'] * train.lr_factor(it, s)
        for p in trainable:
            p.grad = torch.randn_like(p)  # i.i.d. N(0, 1) "gradients": no data, no loss
        train.clip_gradients(groups, s)
        optimizer.step()
        if it + 1 in log_iters:
            trajectory[it + 1] = model.observables()
    return trajectory


def compare(run_dir, matrices=MATRICES):
    """Real vs noise trajectories of the chosen matrices' weight_rms and scalar multipliers."""
    ckpt = load_checkpoint(os.path.join(run_dir, 'ckpt.pt'), 'abm.py')
    s = train.Settings(**guards.saved_settings(ckpt['settings']))
    n_layer = s.n_layer
    names = [m.replace('blocks.-1.', f'blocks.{n_layer - 1}.') for m in matrices]
    real = real_trajectories(run_dir)
    noise = brownian_motion(s, ckpt['model_config']['vocab_size'], sorted(real))
    candidates = [f'{n}.{k}' for n in names for k in ('weight_rms', 'scalar_mult_mean')]
    keys = [key for key in candidates if key in real[0]]
    iters = sorted(real)
    lr, wd = matrix_lr_wd(s)
    mults = '+'.join(k[0] for k in ('scalar', 'row', 'col') if getattr(s, f'{k}_mult')) or 'none'
    label = (f'{s.optimizer}, S = sqrt(lr/wd) = {(lr / wd) ** 0.5:.3g} (lr {lr:g}, wd {wd:g}), '
             f'mults {mults}')
    lr_times_wd_steps = sum(lr * wd * train.lr_factor(it, s) for it in range(s.max_iters))
    return dict(run=run_dir, label=label, iters=iters,
                lr_times_wd_steps=lr_times_wd_steps,
                real={k: [real[i][k] for i in iters] for k in keys},
                noise={k: [noise[i][k] for i in iters] for k in keys})


def matrix_lr_wd(s):
    """The peak LR and the weight decay of the hidden matrices W~,
    as train.param_groups() sets them."""
    if s.optimizer == 'muon':
        return s.muon_lr, train.pick(s.muon_wd, s.weight_decay)
    return train.pick(s.matrix_lr, s.learning_rate), train.pick(s.matrix_wd, s.weight_decay)


def plot(results, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    short = lambda key: key.replace('blocks.', 'b').split('.weight_rms')[0].split('.scalar_mult')[0]
    columns = 4
    figsize = (3.3 * columns, 2.5 * len(results))
    fig, axes = plt.subplots(len(results), columns, figsize=figsize, squeeze=False)
    for row, r in zip(axes, results):
        rms_keys = [k for k in r['real'] if k.endswith('weight_rms')][:columns - 1]
        for ax, key in zip(row, rms_keys):  # one panel per matrix: ||W~||, real vs noise
            ax.plot(r['iters'], r['real'][key], label='real run')
            ax.plot(r['iters'], r['noise'][key], '--', label='noise (ABM)')
            ax.set_title(f'RMS of W~, {short(key)}', fontsize=8)
        ax = row[-1]  # the scalar multipliers of the same matrices, all in one panel
        for i, key in enumerate(k for k in r['real'] if 'scalar_mult' in k):
            ax.plot(r['iters'], r['real'][key], color=f'C{i + 2}', label=short(key))
            ax.plot(r['iters'], r['noise'][key], '--', color=f'C{i + 2}')
        title = 'scalar multipliers s (dashed: ABM)' if ax.lines else 'no scalar multipliers'
        ax.set_title(title, fontsize=8)
        if ax.lines:
            ax.legend(fontsize=6)
        for ax in row:
            ax.set_xlabel('step', fontsize=8)
            ax.tick_params(labelsize=7)
        ylabel = f"{r['label']}\n{r['lr_times_wd_steps']:.1f} equilibrium times"
        row[0].set_ylabel(ylabel.replace(', ', '\n', 2), fontsize=7)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv):
    parser = argparse.ArgumentParser(prog='abm.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('runs', nargs='+', help='train.py --out_dir folders')
    parser.add_argument('--out', default='abm.png',
                        help='the figure (PNG); its numbers go to .json beside it')
    parser.add_argument('--matrices', default=','.join(MATRICES),
                        help='comma-separated matrix names')
    args = parser.parse_args(argv)
    for run in args.runs:  # each log and checkpoint readable, before the minutes of noise
        read_log(run)
        read_checkpoint(run)
    results = [compare(run, args.matrices.split(',')) for run in args.runs]
    with open(os.path.splitext(args.out)[0] + '.json', 'w') as f:
        json.dump(results, f, indent=1)
    plot(results, args.out)
    for r in results:
        gaps = {k: r['noise'][k][-1] / r['real'][k][-1] for k in r['real']}
        ratios = ', '.join(f'{k} {v:.2f}' for k, v in gaps.items())
        print(f"{r['run']}: final noise / real: " + ratios)
    print(f'saved {args.out}')


if __name__ == '__main__':
    main(sys.argv[1:])
