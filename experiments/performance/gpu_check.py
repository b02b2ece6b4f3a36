"""
The GPU check: what to run first on a GPU, in one call that answers within --budget seconds of
process start (default 480, under a 10-minute slot). Every CUDA path of train.py runs a few steps,
the runs that must agree are compared, and bench.py times GPT-2 small. Each record goes into --out
as it comes (JSON, rewritten atomically), so a run cut off keeps what it did.

    # here, once: the dataset is git-ignored, so prepare it and send it with the repository
    python data/shakespeare_char/prepare.py --input ../shared/data/tinyshakespeare/input.txt
    # the one command: the tracked files and data/shakespeare_char, nothing else, to the GPU
    # machine, then the check with its own python3 and torch; results in ~/out there
    tar -czf - $(git ls-files) data/shakespeare_char | ssh $GPU 'mkdir -p nanolrm && cd nanolrm \
        && tar -xzf - && python3 experiments/performance/gpu_check.py --out ~/out/gpu_check.json'
    # the toy size on the CPU, as the test runs it
    python experiments/performance/gpu_check.py --device cpu --out /tmp/gpu_check.json

Sizes. CUDA: GPT-2 small's width, vocabulary and context (768, 50304, 1024) with 2 layers, the same
kernels as 12 layers, which then serve bench.py from the compile cache; batch 16, --grad_accum 2,
bfloat16, compiled, 10 steps. --device cpu or --quick: 2 layers of width 64, float32, eager,
4 steps. Every run is a process with a time limit, under TORCH_LOGS=recompiles,graph_breaks; a
compiled run fails on a recompile_limit hit (a silent fall-back to eager), a graph break, or more
recompiles than expected (train.py: 1, between the evaluation's graph, no_grad, and the step's).

  preflight    one line, exit code 2, in seconds: no CUDA, no prepared dataset, an import missing
  features     train.py as compiled in real use: AdamW without and with s+r+c multipliers (W
               built once per step, and per micro-batch), Muon with r+c symmetry_free; each
               finishes and its val loss falls
  build_once   W built once vs per micro-batch: the same losses and gradient norms
  compile      compiled vs eager (AdamW s+r+c): the same losses and gradient norms
  resume       per optimizer: half the steps, then --resume = the uninterrupted run, losses and
               gradient norms (CUDA within 1e-3, where other batches differ by ~1e-2)
  float16      --dtype float16 (GradScaler), eager: finishes, the val loss falls            (CUDA)
  cpu_to_cuda  a float32 CPU checkpoint resumed on CUDA, eager, TF32 off, continues as on the
               CPU: loss parity within 1e-3                                                 (CUDA)
  torchrun     1 rank, NCCL, DDP around the compiled model = the plain run. One rank tests
               torchrun, NCCL's start and end, DDP with compile and rank 0's saving, not the
               averaging over ranks: two ranks cannot share one GPU under NCCL, hence:      (CUDA)
  ddp          2 CPU ranks (gloo): DDP's averaging and Muon's all_gather = 1 process with twice
               the batch
  fold         sample.py --fold samples from the AdamW s+r+c checkpoint
  bench        bench.py at GPT-2 small (12 layers), 0.5M then 16k tokens per step: ms, tokens/s,
               MFU, peak memory of each variant, Muon's share of a step
The per-stage time estimate on an H200: experiments/performance/README.md. Exit code 0 when no check
failed (one cut by the budget is 'skipped: out of time'), 1 if one did, 2 if the preflight failed.
"""
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.time()  # the budget counts from here: before torch's import, which takes seconds

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from runtime import OneLineParser, fail  # noqa: E402

GPT2_WIDTH = ['--n_head', 12, '--n_embd', 768, '--block_size', 1024, '--vocab_size', 50304,
              '--batch_size', 16]  # bench.py's micro-batch: the same graphs
CHECK_SIZE = ['--n_layer', 2, *GPT2_WIDTH]
BENCH_SIZE = ['--n_layer', 12, *GPT2_WIDTH]  # GPT-2 small
TOY = ['--n_layer', 2, '--n_head', 2, '--n_embd', 64, '--block_size', 32, '--batch_size', 4]
SRC = ['--scalar_mult', '--row_mult', '--col_mult']
FEATURES = {  # each multiplier graph compiled, W built once and per micro-batch, both optimizers
    'adamw none': ['--optimizer', 'adamw'],
    'adamw s+r+c': ['--optimizer', 'adamw', *SRC],
    'adamw s+r+c per micro-batch': ['--optimizer', 'adamw', *SRC, '--build_once', 'false'],
    'muon r+c symmetry_free': ['--optimizer', 'muon', '--row_mult', '--col_mult',
                               '--mult_placement', 'symmetry_free'],
}
RESUMED = {'adamw': 'adamw s+r+c', 'muon': 'muon r+c symmetry_free'}  # the uninterrupted runs
FOLD_RUN = 'adamw s+r+c'  # the feature run whose checkpoint sample.py --fold reads
NUMBERS = ('loss', 'grad_norm', 'mult_grad_norm', 'train_loss', 'val_loss')  # of log.jsonl
OK, FAILED, OUT_OF_TIME = 'ok', 'failed', 'skipped: out of time'
STDERR_LINES = 30  # what a failure keeps of its stderr
TERM_WAIT, KILL_WAIT = 10, 5  # seconds a stopped run gets after SIGTERM, then after SIGKILL


# -------------------------------------------------------------------------------------------------
# the plan, the preflight and the results file


def plan(args, started, work):
    """Sizes, flags and time limits of every run, from the command line."""
    cuda = args.device == 'cuda'
    gpt2 = cuda and not args.quick
    p = dict(cuda=cuda, gpt2=gpt2, device=args.device, dataset=dataset_folder(args.dataset),
             work=Path(work), deadline=started + args.budget, done={},
             cap=150 if gpt2 else 120,  # seconds a run may take before it counts as hung
             min_left=30 if gpt2 else 5)  # seconds a run needs at least, else it is not started
    p['steps'] = 10 if gpt2 else 4
    p['train'] = train_flags(p, CHECK_SIZE if gpt2 else TOY, args.device,
                             'bfloat16' if gpt2 else 'float32', gpt2, p['steps'])
    p['toy_cpu'] = train_flags(p, TOY, 'cpu', 'float32', False, 8)  # CPU-side runs on CUDA
    return p


def train_flags(p, size, device, dtype, compiled, steps):
    """train.py's flags: evaluated at 0 and at the end, a log line every step, the same
    schedule for a run of `steps` and for its halves (--lr_decay_iters); the RMSNorm gains and
    the multipliers at the default --learning_rate, 1e-3, as the checks were made."""
    return [*size, '--device', device, '--dtype', dtype, '--compile', str(compiled).lower(),
            '--dataset', p['dataset'], '--grad_accum', 2, '--max_iters', steps,
            '--eval_interval', steps, '--eval_iters', 2, '--log_interval', 1, '--warmup_iters', 2,
            '--lr_decay_iters', steps, '--sample_tokens', 0, '--gain_lr', '1e-3',
            '--mult_lr', '1e-3']


def dataset_folder(dataset):
    """train.py's --dataset: a folder, or a name in data/."""
    return os.path.abspath(dataset if os.path.isdir(dataset) else REPO / 'data' / dataset)


def preflight(args):
    """In seconds, one line and exit code 2 where nothing could run: no CUDA, no dataset, an
    import missing. Returns the device's description."""
    python = sys.version.split()[0]
    versions = f'torch {torch.__version__}, CUDA {torch.version.cuda}, Python {python}'
    if args.device == 'cuda' and not torch.cuda.is_available():
        fail(f'no CUDA device ({versions}); --device cpu checks the toy size on the CPU')
    try:
        importlib.import_module('train')  # the model, Muon, the data: what every run imports
        TokenData = importlib.import_module('data.common').TokenData
    except ImportError as err:
        fail(f'train.py cannot be imported: {err} ({versions})')
    folder = dataset_folder(args.dataset)
    try:
        TokenData(folder)
    except (OSError, ValueError, KeyError) as err:
        fail(f'--dataset {args.dataset}: {err}; it is git-ignored: prepare it (python '
             'data/shakespeare_char/prepare.py --input PATH) and copy the folder with the code')
    if args.device == 'cuda':
        try:
            torch.ones(1, device='cuda').sum().item()  # the driver answers
        except RuntimeError as err:
            fail(f'CUDA does not work: {str(err).splitlines()[0]} ({versions})')
        gpu = torch.cuda.get_device_properties(0)
        return f'{gpu.name}, {gpu.total_memory / 2**30:.0f} GiB, {os.cpu_count()} cores; {versions}'
    return f'CPU, {os.cpu_count()} cores; {versions}'


def write_json(path, results):
    """Rewrite the results file atomically: a temporary file beside it, then renamed over it."""
    temporary = f'{path}.tmp'
    with open(temporary, 'w') as f:
        json.dump(results, f, indent=1)
    os.replace(temporary, path)


# -------------------------------------------------------------------------------------------------
# runs: processes with a time limit, stopped with everything they started


def run(p, name, *command, expected_recompiles=0, cap=None, env=None, output=False):
    """One command in the repository; its record. It gets its cap (default p['cap']) or the time
    left, less what stopping it takes. Stopped at the deadline it is skipped; at its cap, failed
    (a hang). A failure keeps the last STDERR_LINES lines of stderr."""
    left = p['deadline'] - time.time() - TERM_WAIT - KILL_WAIT
    if left < p['min_left']:
        return dict(name=name, status=OUT_OF_TIME, seconds=0)
    timeout, command, t0 = min(cap or p['cap'], left), [str(c) for c in command], time.time()
    env = dict(os.environ, TORCH_LOGS='recompiles,graph_breaks', **(env or {}))
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err, env=env,
                                   start_new_session=True)
        try:
            process.wait(timeout)
            stopped = False
        except subprocess.TimeoutExpired:
            stop(process)
            stopped = True
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    record = dict(name=name, status=OK, seconds=round(time.time() - t0, 1),
                  recompiles=stderr.count('Recompiling function'),
                  expected_recompiles=expected_recompiles,
                  graph_breaks=stderr.count('Graph Break Reason'),
                  recompile_limit_hits=stderr.count('torch._dynamo hit config.'),
                  command=' '.join(command), **dict(output=stdout) if output else {})
    if stopped and timeout == left:
        why, status = f'stopped at the deadline, after {timeout:.0f} s', OUT_OF_TIME
    elif stopped:
        why, status = f'no result in {timeout:.0f} s (its limit): stopped', FAILED
    elif process.returncode != 0:
        why, status = f'exit code {process.returncode}', FAILED
    if stopped or process.returncode != 0:
        record.update(status=status, why=why, stderr_tail=stderr.splitlines()[-STDERR_LINES:])
    judge(record, compile_failure(record))
    return record


def stop(process):
    """SIGTERM to a process and all it started, then SIGKILL to what is left; each wait bounded.
    (torchrun's workers run in sessions of their own, out of reach of its process group.) Only
    processes of the sessions found at the start are signalled."""
    family = [process.pid, *descendants(process.pid)]
    sessions = {process.pid} | {pid for pid in family if session(pid) == pid}
    for signum, wait in ((signal.SIGTERM, TERM_WAIT), (signal.SIGKILL, KILL_WAIT)):
        family = [pid for pid in {*family, *descendants(process.pid)} if session(pid) in sessions]
        for pid in family:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        waited_until = time.time() + wait
        while not ended(process, family) and time.time() < waited_until:
            time.sleep(0.1)
        if ended(process, family):
            return


def ended(process, family):
    return process.poll() is not None and not any(running(pid) for pid in family)


def session(pid):
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def running(pid):
    """Whether a process runs: it exists and is no zombie (Linux's /proc; elsewhere: no)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def descendants(pid):
    """Every process that pid started, and theirs (from Linux's /proc; elsewhere none)."""
    children = {}
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            parent = int(stat.read_text().rsplit(')', 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        their_children = children.get(todo.pop(), [])
        found += their_children
        todo += their_children
    return found


def train(p, name, *flags, base=None, folder=None, env=None):
    """train.py: the common flags (base), then the check's (the last value of a flag wins). A
    compiled run logs one recompile: the evaluation's graph (no_grad) and the training step's."""
    command = ['train.py', *(base or p['train']), '--out_dir', folder or out_dir(p, name), *flags]
    compiles = [command[i + 1] for i, c in enumerate(command) if c == '--compile'][-1] == 'true'
    return run(p, name, sys.executable, *command, expected_recompiles=int(compiles), env=env)


def out_dir(p, name):
    return p['work'] / re.sub(r'\W+', '_', name)


# -------------------------------------------------------------------------------------------------
# verdicts


def judge(record, failure):
    """An ok record becomes failed, for the reason given (None: it stays ok)."""
    if record['status'] == OK and failure:
        record.update(status=FAILED, why=failure)


def compile_failure(record):
    if record['recompile_limit_hits']:
        return 'hit torch._dynamo recompile_limit: a graph fell back to eager'
    if record['graph_breaks']:
        return f"{record['graph_breaks']} graph breaks (expected none)"
    if record['recompiles'] > record['expected_recompiles']:
        return f"{record['recompiles']} recompiles (expected {record['expected_recompiles']})"
    return None


def log(folder):
    """A run's log.jsonl: {(iter, 'eval' or 'step'): line}."""
    with open(Path(folder) / 'log.jsonl') as f:
        lines = [json.loads(line) for line in f]
    return {(x['iter'], 'eval' if 'val_loss' in x else 'step'): x for x in lines}


def loss_failure(folder):
    """None if the val loss fell from the first evaluation to the last."""
    evals = [x['val_loss'] for (_, kind), x in sorted(log(folder).items()) if kind == 'eval']
    if len(evals) < 2 or not evals[-1] < evals[0]:
        return f'the val loss did not fall: {evals}'
    return None


def compare(p, record, reference, other, tolerance):
    """Whether two runs (names: their out_dir) logged the same numbers at every line of the
    reference's log, each within the tolerance (relative); the largest difference of each number
    goes into the record. Skipped if either is a run that did not finish ok (failed, or skipped:
    out of time)."""
    for run in (reference, other):
        if record['status'] == OK and p['done'].get(run, {}).get('status', OK) != OK:
            record.update(status=f'skipped: needs {run}')
    if record['status'] != OK:
        return record
    expected, got = log(out_dir(p, reference)), log(out_dir(p, other))
    missing = [key for key in expected if key not in got]
    if missing:
        judge(record, f'{other} logged no line at (iter, kind) {missing[0]}')
        return record
    diffs = {}
    for key, line in expected.items():
        for number in NUMBERS:
            if number in line:
                a, b = line[number], got[key][number]
                diff = abs(a - b) / max(abs(a), abs(b), 1e-30)
                diffs[number] = max(diffs.get(number, 0.0), diff)
    record.update(max_relative_diff=diffs, tolerance=tolerance)
    worst = max(diffs, key=diffs.get)
    judge(record, None if diffs[worst] <= tolerance else
          f'{worst} differs by {diffs[worst]:.2e} (relative; allowed {tolerance})')
    return record


def merged(name, *records):
    """One check made of several runs: the first that is not ok decides its status."""
    first = next((r for r in records if r['status'] != OK), records[-1])
    record = dict(name=name, status=first['status'],
                  seconds=round(sum(r['seconds'] for r in records), 1),
                  recompiles=sum(r.get('recompiles', 0) for r in records),
                  commands=[r['command'] for r in records if 'command' in r])
    record.update({k: first[k] for k in ('why', 'stderr_tail') if k in first})
    return record


def skipped(name, why):
    return dict(name=name, status=f'skipped: {why}', seconds=0)


def cuda_only(check):
    """A check of CUDA: without CUDA, one record 'skipped: needs CUDA'."""
    def cuda_check(p):
        yield from check(p) if p['cuda'] else [skipped(check.__name__[6:], 'needs CUDA')]
    cuda_check.__name__ = check.__name__
    return cuda_check


# -------------------------------------------------------------------------------------------------
# the checks, in order: each yields its records as they finish


def check_features(p):
    """Each finishes, its val loss falls, its compile logs what is expected."""
    for name, flags in FEATURES.items():
        record = train(p, name, *flags)
        if record['status'] == OK:
            judge(record, loss_failure(out_dir(p, name)))
        if name != FOLD_RUN:  # a checkpoint at GPT-2's vocabulary with AdamW's state: 1.1 GB
            (out_dir(p, name) / 'ckpt.pt').unlink(missing_ok=True)
        yield record


def check_build_once(p):
    """The same function computed in another order: float32 sums apart on the CPU (1e-4); on
    CUDA the two graphs also round bfloat16 differently (1e-2). A build whose backward drops or
    scales a term moves a gradient norm (the multipliers' is logged apart) by more."""
    record = dict(name='build_once', status=OK, seconds=0)
    yield compare(p, record, 'adamw s+r+c', 'adamw s+r+c per micro-batch',
                  1e-2 if p['cuda'] else 1e-4)


def check_compile(p):
    """Compiled vs eager, AdamW s+r+c. bfloat16 keeps 8 bits (4e-3 a rounding): eager rounds
    between the ops that compiled kernels fuse, and 10 steps compound it; 2e-2 leaves room and
    still catches a miscompiled kernel. On the CPU both runs are eager: exact (with --quick on
    CUDA, both eager in float32: atomic adds apart, 1e-3)."""
    name, reference = 'compiled vs eager', 'adamw s+r+c'
    record = train(p, name, *FEATURES[reference], '--compile', 'false')
    yield compare(p, record, reference, name,
                  2e-2 if p['gpt2'] else 1e-3 if p['cuda'] else 1e-6)  # --quick: float32
    (out_dir(p, name) / 'ckpt.pt').unlink(missing_ok=True)


def check_resume(p):
    """Half the steps, then --resume for the rest: the uninterrupted run's numbers. On the CPU
    exactly; on CUDA within 1e-3: atomic adds (the embedding's and attention's backward) make
    runs differ, by ~1e-5 we estimate, where batches other than the uninterrupted run's give
    losses and gradient norms ~1e-2 apart."""
    for optimizer, reference in RESUMED.items():
        name, flags = f'resume {optimizer}', FEATURES[reference]
        record = merged(name, train(p, name, *flags, '--max_iters', p['steps'] // 2),
                        train(p, name, *flags, '--resume'))
        yield compare(p, record, reference, name, 1e-3 if p['cuda'] else 1e-6)
        (out_dir(p, name) / 'ckpt.pt').unlink(missing_ok=True)


@cuda_only
def check_float16(p):
    """--dtype float16, GradScaler's path, eager: it finishes and the val loss falls."""
    record = train(p, 'float16', *FEATURES['adamw s+r+c'], '--dtype', 'float16',
                   '--compile', 'false')
    if record['status'] == OK:
        judge(record, loss_failure(out_dir(p, 'float16')))
    (out_dir(p, 'float16') / 'ckpt.pt').unlink(missing_ok=True)
    yield record


@cuda_only
def check_cpu_to_cuda(p):
    """A float32 CPU checkpoint resumed on CUDA (eager) continues as the CPU does: CPU vs CUDA
    loss parity. TF32 is off for the CUDA run (NVIDIA_TF32_OVERRIDE=0): both sides compute in
    float32 and differ in summation order, ~1e-6 over 6 steps by our estimate; 1e-3 leaves room
    for that and stays far below what a wrong kernel or a lost optimizer state does (~1e-2)."""
    name, cpu, cuda = 'cpu_to_cuda', 'cpu_to_cuda cpu', 'cpu_to_cuda cuda'
    half = train(p, name, *SRC, '--max_iters', 2, base=p['toy_cpu'], folder=out_dir(p, cpu))
    if half['status'] == OK:
        shutil.copytree(out_dir(p, cpu), out_dir(p, cuda))
    on_cpu = train(p, name, '--resume', base=p['toy_cpu'], folder=out_dir(p, cpu))
    on_cuda = train(p, name, '--resume', '--device', 'cuda', base=p['toy_cpu'],
                    folder=out_dir(p, cuda), env=dict(NVIDIA_TF32_OVERRIDE='0'))
    yield compare(p, merged(name, half, on_cpu, on_cuda), cpu, cuda, 1e-3)


@cuda_only
def check_torchrun(p):
    """torchrun, 1 rank on the GPU (NCCL), DDP around the compiled model: the plain run's
    numbers, within the resume check's 1e-3."""
    name, reference = 'torchrun', 'muon r+c symmetry_free'
    record = run(p, name, sys.executable, '-m', 'torch.distributed.run', '--standalone',
                 '--nproc_per_node=1', 'train.py', *p['train'], '--out_dir', out_dir(p, name),
                 *FEATURES[reference], expected_recompiles=1)
    yield compare(p, record, reference, name, 1e-3)
    (out_dir(p, name) / 'ckpt.pt').unlink(missing_ok=True)


def check_ddp(p):
    """2 CPU processes (gloo) under torchrun, each with half the batch; Muon s+r+c, W built once:
    one process with the whole batch, up to float summation order (1e-5, as in the tests)."""
    base = p['toy_cpu'] if p['cuda'] else p['train']
    flags = ['--optimizer', 'muon', *SRC]
    ranks = run(p, 'ddp', sys.executable, '-m', 'torch.distributed.run', '--standalone',
                '--nproc_per_node=2', 'train.py', *base, '--out_dir', out_dir(p, 'ddp ranks'),
                *flags, '--batch_size', 2)
    single = train(p, 'ddp', *flags, '--batch_size', 4, base=base, folder=out_dir(p, 'ddp one'))
    yield compare(p, merged('ddp', ranks, single), 'ddp one', 'ddp ranks', 1e-5)


def check_fold(p):
    """sample.py --fold: the multipliers folded into the matrices, then 20 tokens sampled."""
    if p['done'][FOLD_RUN]['status'] != OK:
        yield skipped('fold', f'needs {FOLD_RUN}')
        return
    yield run(p, 'fold', sys.executable, 'sample.py', '--out_dir', out_dir(p, FOLD_RUN),
              '--fold', '--max_new_tokens', 20, '--device', p['device'])
    (out_dir(p, FOLD_RUN) / 'ckpt.pt').unlink(missing_ok=True)


def check_bench(p):
    """bench.py's tables at 0.5M tokens per step (the headline; few repeats: ~1 s a step), then
    at 16k, whose graphs the first run compiled. Compiled, bench.py recompiles once per multiplier
    setting after the first (models of one setting share a graph): none, s+r+c built once and per
    micro-batch at 0.5M; none and s+r+c at 16k. The toy size stands in with 4 micro-batches."""
    size = [*(BENCH_SIZE if p['gpt2'] else TOY), '--device', p['device'],
            '--compile', str(p['gpt2']).lower()]
    runs = {'bench 0.5M': (['--grad_accum', 32, '--repeats', 3, '--warmup', 1] if p['gpt2'] else
                           ['--grad_accum', 4, '--repeats', 1, '--warmup', 1], 2),
            'bench 16k': (['--repeats', 10, '--warmup', 3] if p['gpt2'] else
                          ['--repeats', 2, '--warmup', 1], 1)}
    for name, (flags, recompiles) in runs.items():
        yield run(p, name, sys.executable, 'experiments/performance/bench.py', *size, *flags,
                  cap=300 if p['gpt2'] else 120, output=True,
                  expected_recompiles=recompiles if p['gpt2'] else 0)


CHECKS = (check_features, check_build_once, check_compile, check_resume, check_float16,
          check_cpu_to_cuda, check_torchrun, check_ddp, check_fold, check_bench)


# -------------------------------------------------------------------------------------------------


def print_row(record):
    print(f"| {record['name']:<28} | {record['status']:<28} | {record['seconds']:>6.1f} | "
          f"{record.get('recompiles', '-'):>10} | {record.get('why', '')}", flush=True)


def main(argv=None, started=None):
    """The checks in order, each record written to --out as it comes; the exit code."""
    started = started or time.time()
    parser = OneLineParser(prog='gpu_check.py', description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--out', required=True,
                        help='the results file (JSON); outside the repository copy, to keep it')
    parser.add_argument('--dataset', default='shakespeare_char',
                        help="train.py's --dataset: a prepared folder, or its name in data/")
    parser.add_argument('--device', default='cuda', choices=('cuda', 'cpu'),
                        help='cuda: GPT-2 width (fails without CUDA); cpu: the toy size')
    parser.add_argument('--quick', action='store_true', help='the toy size, even on CUDA')
    parser.add_argument('--budget', type=float, default=480,
                        help='seconds from process start; the checks left then are skipped')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    device = preflight(args)
    gpt2 = args.device == 'cuda' and not args.quick
    results = dict(device=device, torch=torch.__version__, cuda=torch.version.cuda,
                   size='GPT-2 width, 2 layers; bench 12 layers' if gpt2 else 'toy',
                   budget=args.budget, finished=False, seconds=round(time.time() - started, 1),
                   checks=[dict(name='preflight', status=OK,
                                seconds=round(time.time() - started, 1))])
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_json(args.out, results)
    except OSError as err:
        fail(f'--out {args.out}: cannot write it ({err.strerror})')
    print(f"{device}\n{results['size']}; budget {args.budget:.0f} s; results in {args.out}")
    print(f"| {'check':<28} | {'status':<28} | {'s':>6} | recompiles | why")
    print_row(results['checks'][0])
    with tempfile.TemporaryDirectory(prefix='gpu_check_') as work:
        p = plan(args, started, work)
        for check in CHECKS:
            for record in check(p):  # a check yields a record per run, as each finishes
                p['done'][record['name']] = record
                results['checks'].append(record)
                results['seconds'] = round(time.time() - started, 1)
                write_json(args.out, results)
                print_row(record)
    for record in results['checks']:
        if 'output' in record:  # bench.py's tables
            print(f"\n{record['name']}:\n" + '\n'.join(
                line for line in record['output'].splitlines() if line.startswith(('|', 'dev'))))
    results.update(finished=True, seconds=round(time.time() - started, 1))
    write_json(args.out, results)
    failed = [r['name'] for r in results['checks'] if r['status'] == FAILED]
    print(f"\n{args.out}: {len(failed)} failed {failed or ''} ({results['seconds']:.0f} s)")
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(started=STARTED))
