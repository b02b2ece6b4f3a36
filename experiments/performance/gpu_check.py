"""
A GPU check in one command: train.py with every feature for a few steps, the GPU paths that have
crashed before, and bench.py's tables, into one JSON file. For one GPU, in under 10 minutes.

    python experiments/performance/gpu_check.py --input ../shared/data/tinyshakespeare/input.txt
    python experiments/performance/gpu_check.py --device cpu   # the toy size, as the test runs it

With CUDA: GPT-2 small (12 x 768, block 1024, the char vocabulary padded to 50304), batch 16
(bench.py's micro-batch, so the compile cache shares graphs), bfloat16, torch.compile. On the CPU or
with --quick: 2 layers of width 64, block 32, float32, no compile. Each run is a subprocess with a
timeout, under TORCH_LOGS=recompiles; each check records ok / failed / skipped, the last stderr
line, its seconds and the recompiles logged.
  1. SMOKE  train.py, --grad_accum 2, evaluated at the end
     features     optimizer {adamw, muon} x multipliers {none, s+r+c, r+c symmetry_free} x W built
                  once per step or per micro-batch (--build_once, which matters with grad_accum 2)
     resume       per optimizer: half the steps, then --resume: the uninterrupted run's losses
     float16      --dtype float16 (GradScaler) finishes                                 (CUDA)
     torchrun     Muon on one rank under torchrun, NCCL                                 (CUDA)
     cpu_to_cuda  a checkpoint trained on the CPU resumes on CUDA, uncompiled           (CUDA)
     fold         sample.py --fold samples from the adamw s+r+c checkpoint
  2. BENCH  bench.py at 16 x 1024 = 16k tokens per step and with --grad_accum 32 (0.5M): its tables
     (multiplier overhead, Muon's share of a step, tokens/s, MFU) as it prints them.
Writes --out (JSON: device, torch version, every check, the bench output); exit code 1 if any
check failed.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from runtime import OneLineParser, fail  # noqa: E402

GPT2 = ['--n_layer', 12, '--n_head', 12, '--n_embd', 768, '--block_size', 1024,
        '--vocab_size', 50304, '--batch_size', 16]
TOY = ['--n_layer', 2, '--n_head', 2, '--n_embd', 64, '--block_size', 32, '--batch_size', 4]
OPTIMIZERS = ('adamw', 'muon')
MULTIPLIERS = {'none': [], 's+r+c': ['--scalar_mult', '--row_mult', '--col_mult'],
               'r+c symmetry_free': ['--row_mult', '--col_mult',
                                     '--mult_placement', 'symmetry_free']}
FOLD_RUN = 'adamw s+r+c'  # the feature run whose checkpoint sample.py --fold reads


def plan(args, work):
    """The sizes and flags of every run, from the command line."""
    cuda = args.device != 'cpu' and torch.cuda.is_available()
    if args.device == 'cuda' and not cuda:
        fail('--device cuda: no CUDA device is available')
    gpt2 = cuda and not args.quick
    steps = 6 if gpt2 else 4
    system = ['--device', 'cuda' if cuda else 'cpu', '--dtype', 'bfloat16' if gpt2 else 'float32',
              '--compile', str(gpt2).lower()]
    data = ['--dataset', args.dataset] + (['--input', args.input] if args.input else [])
    train = [*(GPT2 if gpt2 else TOY), *system, *data, '--grad_accum', 2, '--max_iters', steps,
             '--eval_interval', steps, '--eval_iters', 2, '--log_interval', 1, '--warmup_iters', 2,
             '--lr_decay_iters', steps, '--sample_tokens', 0]  # the same schedule when resumed
    return dict(cuda=cuda, gpt2=gpt2, steps=steps, system=system, data=data, train=train,
                work=Path(work), timeout=300 if gpt2 else 120, deadline=time.time() + args.budget)


def skipped(name, why):
    return dict(name=name, status=f'skipped: {why}', seconds=0, last_stderr='', recompiles=0)


def run(p, name, *command, output=False):
    """Run a command in the repository; its record (with its stdout if output). A timeout kills
    its process group (torchrun's workers too)."""
    timeout = min(p['timeout'], p['deadline'] - time.time())
    if timeout < 10:
        return skipped(name, 'out of time (--budget)')
    command, t0 = [str(c) for c in command], time.time()
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True,
                          env=dict(os.environ, TORCH_LOGS='recompiles')) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            err += f'\ntimed out after {timeout:.0f} s'
    lines = [line for line in err.splitlines() if line.strip()]
    return dict(name=name, status='ok' if process.returncode == 0 else 'failed',
                seconds=round(time.time() - t0, 1), last_stderr=lines[-1] if lines else '',
                recompiles=sum('Recompiling function' in line for line in lines),
                command=' '.join(command), **dict(output=out) if output else {})


def merged(name, *records):
    """One check made of several runs: ok if all are; the first failure's last stderr line."""
    failed = [r for r in records if r['status'] != 'ok']
    return dict(name=name, status=failed[0]['status'] if failed else 'ok',
                seconds=round(sum(r['seconds'] for r in records), 1),
                last_stderr=(failed[0] if failed else records[-1])['last_stderr'],
                recompiles=sum(r['recompiles'] for r in records),
                command=' && '.join(r.get('command', '') for r in records))


def cuda_only(kind):
    """A check kind that needs CUDA: without it, one record 'skipped: needs CUDA'."""
    def check(p):
        yield from kind(p) if p['cuda'] else [skipped(kind.__name__[6:], 'needs CUDA')]
    return check


def out_dir(p, name):
    return p['work'] / re.sub(r'\W+', '_', name)


def train(p, name, *flags):
    """train.py: the common flags, then the check's (the last value of a flag wins)."""
    return run(p, name, sys.executable, 'train.py', *p['train'], '--out_dir', out_dir(p, name),
               *flags)


def check_features(p):
    for optimizer in OPTIMIZERS:
        for multipliers, flags in MULTIPLIERS.items():
            for build_once in (True,) if multipliers == 'none' else (True, False):
                name = f'{optimizer} {multipliers}' + ('' if build_once else ' per micro-batch')
                yield train(p, name, '--optimizer', optimizer, *flags,
                            '--build_once', str(build_once).lower())
                if name != FOLD_RUN:  # a GPT-2 checkpoint with its optimizer state is 1.5 GB
                    (out_dir(p, name) / 'ckpt.pt').unlink(missing_ok=True)


def losses(folder):
    """{(iter, 'train' or 'val'): loss} of a run's log.jsonl."""
    with open(folder / 'log.jsonl') as f:
        lines = [json.loads(line) for line in f]
    return {(x['iter'], 'val' if 'val_loss' in x else 'train'): x.get('val_loss', x.get('loss'))
            for x in lines}


def check_resume(p):
    """Half the steps, then --resume for the rest: the losses of the uninterrupted feature run.
    On CUDA within 5e-3 (atomic adds in backward make runs differ a little); on the CPU exact."""
    tolerance = 5e-3 if p['cuda'] else 1e-6
    for optimizer in OPTIMIZERS:
        name, flags = f'resume {optimizer}', ['--optimizer', optimizer, *MULTIPLIERS['s+r+c']]
        record = merged(name, train(p, name, *flags, '--max_iters', p['steps'] // 2),
                        train(p, name, *flags, '--resume'))
        if record['status'] == 'ok':
            reference, resumed = losses(out_dir(p, f'{optimizer} s+r+c')), losses(out_dir(p, name))
            diff = max((abs(resumed[k] - v) / abs(v) if k in resumed else float('inf')
                        for k, v in reference.items()), default=float('inf'))
            record['max_relative_diff'] = diff
            if not diff <= tolerance:
                record.update(status='failed', last_stderr=f'the losses differ from an '
                              f'uninterrupted run by {diff:.2e} (relative; allowed {tolerance})')
        (out_dir(p, name) / 'ckpt.pt').unlink(missing_ok=True)
        yield record


@cuda_only
def check_float16(p):
    yield train(p, 'float16', '--dtype', 'float16')


@cuda_only
def check_torchrun(p):
    yield run(p, 'torchrun', sys.executable, '-m', 'torch.distributed.run', '--standalone',
              '--nproc_per_node=1', 'train.py', *p['train'], '--optimizer', 'muon',
              '--row_mult', '--col_mult', '--out_dir', out_dir(p, 'torchrun'))


@cuda_only
def check_cpu_to_cuda(p):
    folder, python = out_dir(p, 'cpu_to_cuda'), sys.executable
    cpu = run(p, 'cpu_to_cuda', python, 'train.py', *TOY, *p['data'], '--max_iters', 2,
              '--eval_iters', 1, '--sample_tokens', 0, '--row_mult', '--col_mult',
              '--device', 'cpu', '--out_dir', folder)
    cuda = run(p, 'cpu_to_cuda', python, 'train.py', '--resume', '--max_iters', 4,
               '--device', 'cuda', '--compile', 'false', '--out_dir', folder)
    yield merged('cpu_to_cuda', cpu, cuda)


def check_fold(p):
    yield run(p, 'fold', sys.executable, 'sample.py', '--out_dir', out_dir(p, FOLD_RUN), '--fold',
              '--max_new_tokens', 20, '--device', p['system'][1])


def check_bench(p):
    """bench.py's tables at 16k and 0.5M tokens per step (fewer repeats there: ~1 s a step)."""
    size = [*(GPT2 if p['gpt2'] else TOY), *p['system']]
    runs = {'bench 16k': ['--repeats', 10 if p['gpt2'] else 2, '--warmup', 3 if p['gpt2'] else 1],
            'bench 0.5M': ['--grad_accum', 32, '--repeats', 3 if p['gpt2'] else 2, '--warmup', 1]}
    for name, flags in runs.items():
        yield run(p, name, sys.executable, 'experiments/performance/bench.py', *size, *flags,
                  output=True)


def main(argv=None):
    parser = OneLineParser(prog='gpu_check.py', description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--out', default=str(Path(__file__).with_suffix('.json')),
                        help='the results file (JSON)')
    parser.add_argument('--input', default='', help="local text for train.py's --input (offline)")
    parser.add_argument('--dataset', default='shakespeare_char', help="train.py's --dataset")
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    parser.add_argument('--quick', action='store_true', help='the toy size, even on CUDA')
    parser.add_argument('--budget', type=float, default=570,
                        help='seconds in all; the checks left after that are skipped')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.input and not os.path.isfile(args.input):
        fail(f'--input {args.input}: no such file')
    t0, smoke, bench = time.time(), [], []
    with tempfile.TemporaryDirectory(prefix='gpu_check_') as work:
        p = plan(args, work)
        device = torch.cuda.get_device_name() if p['cuda'] else f'CPU, {os.cpu_count()} cores'
        print(f"{device}, torch {torch.__version__}, {'GPT-2 small' if p['gpt2'] else 'toy size'}")
        print(f"| {'check':<40} | {'status':<19} | {'s':>6} | recompiles | last stderr line")
        for kind in (check_features, check_resume, check_float16, check_torchrun,
                     check_cpu_to_cuda, check_fold, check_bench):
            for record in kind(p):  # each kind yields a record per check, as it finishes
                (bench if kind is check_bench else smoke).append(record)
                print(f"| {record['name']:<40} | {record['status']:<19} | {record['seconds']:>6.1f}"
                      f" | {record['recompiles']:>10} | {record['last_stderr'][-60:]}", flush=True)
    for record in bench:
        print(f"\n{record['name']}:\n" + '\n'.join(line for line in record.get('output', '')
                                                   .splitlines() if line.startswith(('|', 'dev'))))
    results = dict(device=device, torch=torch.__version__, cuda=torch.version.cuda,
                   size='GPT-2 small' if p['gpt2'] else 'toy', seconds=round(time.time() - t0, 1),
                   checks=smoke, bench=bench)
    with open(args.out, 'w') as f:
        json.dump(results, f, indent=1)
    failed = [r['name'] for r in smoke + bench if r['status'] == 'failed']
    print(f"\n{args.out}: {len(failed)} failed {failed or ''} ({results['seconds']:.0f} s)")
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
