"""
The plumbing every nanoLRM script shares (train.py, sample.py, bench.py, abm.py), kept here so that
each script reads as what it does:
  - command-line flags generated from a dataclass whose fields carry a help string (model.flag);
  - one-line errors with exit code 2 for anything a user can fix (`fail`);
  - Ctrl-C and SIGTERM turned into a request to stop after the step (`StopRequests`);
  - a run's start (`start_run`): the device and the autocast dtype, and the process group when
    torchrun starts several processes;
  - the one checkpoint format, written atomically and read safely; a training run's checkpoint
    (`save_training_state`) and resuming from it (`resume_from`: model, optimizer, scaler and RNG
    states, the log cut back to it);
  - log.jsonl, one JSON object per line.
"""
import argparse
import json
import os
import shutil
import signal
import sys
import threading
import typing
from contextlib import nullcontext
from dataclasses import asdict, fields

import torch
import torch.distributed as dist

SCRIPT = os.path.basename(sys.argv[0])
PROG = SCRIPT if SCRIPT.endswith('.py') and SCRIPT != '__main__.py' else 'train.py'  # in messages


# -------------------------------------------------------------------------------------------------
# flags


def in_range(value, allowed):
    """Whether value lies in the interval allowed, e.g. '[0, 1)': 0 <= value < 1. NaN never does."""
    low, high = (float(bound) for bound in allowed[1:-1].split(','))
    above = value >= low if allowed[0] == '[' else value > low
    below = value <= high if allowed[-1] == ']' else value < high
    return above and below


def or_default(value, default):
    """A setting whose None means "as another setting": its value, or that default."""
    return default if value is None else value


def check_ranges(settings):
    """Every field with an allowed range holds a value in it (None = its default), else fail()."""
    for f in fields(settings):
        value, allowed = getattr(settings, f.name), f.metadata.get('allowed')
        if allowed and value is not None and not in_range(value, allowed):
            fail(f'--{f.name} {value} must be in {allowed}')


def check_writable_folder(folder, flag):
    """The folder a run writes into: created if missing; one line, exit 2, if it is a file or
    cannot be created or written."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        fail(f'{flag} {folder} is a file, not a folder')
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        fail(f'{flag} {folder}: cannot create it ({err.strerror})')
    if not os.access(folder, os.W_OK):
        fail(f'{flag} {folder} is not writable')


def fail(message):
    """A bad flag or setting: one line naming it, exit code 2 (argparse's convention)."""
    print(f'{PROG}: error: {message}', file=sys.stderr)
    sys.exit(2)


def parse_bool(text):
    if text.lower() in ('1', 'true', 'yes', 'on'):
        return True
    if text.lower() in ('0', 'false', 'no', 'off'):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value: '{text}' (use true/false/1/0)")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's message names the flag; skip the long usage text
        fail(message)


def parse_flags(argv, settings_class):
    """Only the flags given, as a dict. Each form works: --name value, --name=value, --flag,
    --no-flag, --flag=false."""
    parser = OneLineParser(prog=PROG, argument_default=argparse.SUPPRESS)
    for f in fields(settings_class):
        # the type without None: float | None -> float
        kind = next(t for t in typing.get_args(f.type) or (f.type,) if t is not type(None))
        help = f"{f.metadata['help']} (default: {f.default})"
        if kind is bool:
            parser.add_argument(f'--{f.name}', nargs='?', const=True, type=parse_bool, help=help)
            parser.add_argument(f'--no-{f.name}', dest=f.name, action='store_false',
                                help=argparse.SUPPRESS)
        else:
            parser.add_argument(f'--{f.name}', type=kind, choices=f.metadata['choices'], help=help)
    return vars(parser.parse_args(argv))


class StopRequests:
    """Inside: SIGINT (Ctrl-C) and SIGTERM (a scheduler's or a preemptible GPU's notice) ask the
    run to stop after the current step; .signal is the one received, else None. A second Ctrl-C
    stops at once, without a traceback. The previous handlers come back on exit."""

    def __enter__(self):
        self.signal, self.previous = None, {}
        if threading.current_thread() is threading.main_thread():  # where Python takes signals
            self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT,
                                                                         signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            print(f'{PROG}: interrupted again: stopped at once, nothing saved', file=sys.stderr,
                  flush=True)
            os._exit(130)
        self.signal = signal.Signals(signum)
        print(f'{PROG}: {self.signal.name}: stopping after this step (Ctrl-C again: at once)',
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def agreed_signal(requests, world_size, device):
    """The stop signal's number if any rank received one (0 if none): signals reach the ranks at
    different steps, so under torchrun they agree here, every step, to stop at the same one."""
    signum = requests.signal or 0
    if world_size > 1:
        signum = torch.tensor(int(signum), device=device)
        dist.all_reduce(signum, op=dist.ReduceOp.MAX)
        signum = int(signum.item())
    return signum


# -------------------------------------------------------------------------------------------------
# device and dtype


def pick_device(device='auto', dtype='auto'):
    """The device, the autocast dtype's name and the autocast context.

    auto: CUDA, else Apple's MPS, else the CPU; bfloat16 on CUDA (float16 where bf16 is missing),
    float32 elsewhere. Every global numerics setting is made here, so that every script (train,
    sample, bench) computes alike and torch.compile's cache, keyed on them, serves them all.
    """
    # float32 matrix products in TF32 on Ampere and later (autocast covers the rest)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if device == 'auto':
        device = ('cuda' if torch.cuda.is_available()
                  else 'mps' if torch.backends.mps.is_available() else 'cpu')
    device = torch.device(device)
    if dtype == 'auto':
        dtype = ('float32' if device.type != 'cuda'
                 else 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16')
    autocast = (nullcontext() if dtype == 'float32'
                else torch.autocast(device.type, dtype=getattr(torch, dtype)))
    return device, dtype, autocast


def start_run(cfg):
    """A training run's processes, device and output folder: (rank, world_size, device, dtype's
    name, autocast context); under torchrun one process per device, else one."""
    rank, world_size, device_name = init_distributed(cfg.device)
    device, dtype, autocast = pick_device(device_name, cfg.dtype)
    check_writable_folder(cfg.out_dir, '--out_dir')
    return rank, world_size, device, dtype, autocast


def init_distributed(device):
    """Under torchrun (which sets RANK): join the process group, one process per GPU (NCCL) or
    per CPU process (gloo). Returns (rank, world_size, device); (0, 1, device) for one process."""
    if 'RANK' not in os.environ:
        return 0, 1, device
    rank = int(os.environ['RANK'])
    world_size = int(os.environ['WORLD_SIZE'])
    local_rank = int(os.environ['LOCAL_RANK'])
    use_cuda = device in ('auto', 'cuda') and torch.cuda.is_available()
    if use_cuda:  # this process's GPU first, then the process group bound to it (NCCL's order)
        torch.cuda.set_device(local_rank)
        dist.init_process_group('nccl', device_id=torch.device('cuda', local_rank))
        return rank, world_size, f'cuda:{local_rank}'
    dist.init_process_group('gloo')
    return rank, world_size, 'cpu' if device == 'auto' else device


def leave_distributed():
    """Under torchrun: leave the process group, all ranks together. (A rank that destroys its gloo
    group while another still works, e.g. rank 0 saving, can abort: 'terminate called ...'.)"""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_script(main):
    """Run a script's main(). Under torchrun the process then ends with os._exit, its exit code
    kept: at interpreter exit a thread of torch.distributed's C++ side is sometimes still joinable
    and aborts a process whose work is done ('terminate called without an active exception')."""
    if 'RANK' not in os.environ:
        return main()
    try:
        main()
        code = 0
    except SystemExit as err:  # fail() and the stops: their code
        code = err.code if isinstance(err.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def gather(tensor, world_size):
    """[rank 0's tensor, rank 1's, ...] on every rank: each rank's RNG state, for the checkpoint."""
    if world_size == 1:
        return [tensor]
    tensors = [None] * world_size
    dist.all_gather_object(tensors, tensor)
    return tensors


def mean_over_ranks(loss, world_size):
    """The step's loss averaged over the ranks: every rank then sees, and decides on, the same."""
    if world_size > 1:
        dist.all_reduce(loss)
        loss /= world_size
    return loss


def average_over_ranks(tensors, world_size):
    """Replace each tensor by its mean over the ranks, in place, with one all_reduce."""
    flat = torch.cat([t.flatten() for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size
    torch._foreach_copy_(tensors, [f.view_as(t) for f, t in zip(flat.split(
        [t.numel() for t in tensors]), tensors)])


# dense bf16 peak FLOP/s by device name, the first match wins: PCIe and NVL cards before SXM's
PEAK_FLOPS = (('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H100', 989e12),
              ('H200 NVL', 835e12), ('H200', 989e12), ('A100', 312e12))


def peak_flops(device):
    """Dense bf16 peak FLOP/s of known GPUs, for MFU; None elsewhere."""
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else ''
    return next((flops for key, flops in PEAK_FLOPS if key in name), None)


# -------------------------------------------------------------------------------------------------
# checkpoints: a dict {model, model_config, settings, meta, iter, ...}; train.py writes its own, with
# the training state (optimizer, scaler, elapsed, rng, world_size) that --resume needs


def save_atomically(checkpoint, path):
    """Write the checkpoint dict into a temporary file beside path, then rename it over path: a
    crash mid-write leaves the previous checkpoint whole. A failed write ends in one line, exit 1."""
    temporary = f'{path}.tmp'
    try:
        with open(temporary, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as err:  # a full disk, a quota, an I/O error
        if os.path.exists(temporary):
            os.remove(temporary)
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
        reason = err.strerror if isinstance(err, OSError) and err.strerror else \
            f'{str(err).splitlines()[0][:100]}; {free:,} bytes free on its disk'
        print(f'{PROG}: could not save {path}: {reason}; the previous checkpoint is untouched',
              file=sys.stderr)
        sys.exit(1)


def save_checkpoint(path, model, settings, meta, iter):
    """A model-only checkpoint (no training state), e.g. a folded model; settings: a dataclass or a
    dict."""
    settings = settings if isinstance(settings, dict) else asdict(settings)
    save_atomically(dict(model=model.state_dict(), model_config=asdict(model.config),
                         settings=settings, meta=meta, iter=iter), path)


def load_checkpoint(path, flag):
    """A nanoLRM checkpoint, loaded safely (weights_only: tensors and plain types) onto the CPU;
    load_state_dict then puts each tensor where its model or optimizer lives. (Mapped to a GPU, the
    RNG states would land there too, and torch.set_rng_state takes CPU bytes only.)
    Bad files fail in one line."""
    if not os.path.exists(path):
        fail(f'{flag}: no checkpoint at {path}: train.py writes one into its --out_dir')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:
        first_line = str(err).splitlines()[0][:120] if str(err) else ''
        fail(f'{flag}: {path} is not a readable checkpoint ({type(err).__name__}: {first_line})')
    if not isinstance(ckpt, dict) or not {'model', 'settings', 'model_config'} <= ckpt.keys():
        fail(f'{flag}: {path} is not a nanoLRM checkpoint '
             '(no model, settings and model_config in it)')
    return ckpt


def load_optimizer_state(optimizer, saved):
    """The saved optimizer state, under this run's group settings (flags given now win).
    MuonAdamW counts steps as ints, torch's AdamW as float32 tensors, which load_state_dict puts on
    the parameters' device when the group is fused: a checkpoint of either resumes in the other."""
    groups = [{**now, 'params': old['params']}
              for now, old in zip(optimizer.param_groups, saved['param_groups'])]
    state = saved['state']
    if isinstance(optimizer, torch.optim.AdamW):
        state = {i: {k: torch.tensor(float(v)) if k == 'step' and isinstance(v, int) else v
                     for k, v in param_state.items()} for i, param_state in state.items()}
    optimizer.load_state_dict(dict(state=state, param_groups=groups))


def restore(ckpt_path, s, model, optimizer, scaler, batches, vocab_size, rank, world_size):
    """--resume: the model, optimizer, scaler and RNG states of out_dir/ckpt.pt; returns its iter
    and the training time it had taken."""
    ckpt = load_checkpoint(ckpt_path, '--resume')  # on the CPU, whatever the device
    if ckpt['model_config']['vocab_size'] != vocab_size:
        fail(f"--dataset {s.dataset}: vocabulary {vocab_size} differs from the checkpoint's "
             f"{ckpt['model_config']['vocab_size']}")
    if ckpt.get('world_size', 1) != world_size:
        fail(f"--resume: the checkpoint was written by {ckpt.get('world_size', 1)} processes, "
             f"not {world_size}")
    model.load_state_dict(ckpt['model'])  # copied onto the model's device
    load_optimizer_state(optimizer, ckpt['optimizer'])
    scaler.load_state_dict(ckpt['scaler'])
    torch.set_rng_state(ckpt['rng']['torch'][rank])
    batches.set_state(ckpt['rng']['batches'])
    if 'cuda' in ckpt['rng'] and torch.cuda.is_available():
        torch.cuda.set_rng_state(ckpt['rng']['cuda'][rank])
    return ckpt['iter'], ckpt['elapsed']


def resume_from(ckpt_path, cfg, model, optimizer, scaler, batches, vocab_size, rank, world_size):
    """--resume: restore the checkpoint's state, drop the lines logged after it (rank 0), and say
    so in one line when it leaves nothing to do. Returns its iter and the training time taken."""
    start_iter, elapsed = restore(ckpt_path, cfg, model, optimizer, scaler, batches, vocab_size,
                                  rank, world_size)
    if rank == 0:
        truncate_log(cfg.out_dir, start_iter)
        if cfg.max_iters <= start_iter:
            print(f'{PROG}: --resume: the checkpoint is at iter {start_iter} and --max_iters is '
                  f'{cfg.max_iters}: nothing to train; raise --max_iters to continue',
                  file=sys.stderr)
    return start_iter, elapsed


def save_training_state(path, model, optimizer, scaler, cfg, meta, it, elapsed, batches, device,
                        world_size, master):
    """The checkpoint of a training run: all that --resume needs to continue exactly (the model,
    its settings, the optimizer and scaler states, each RNG). Every rank takes part (the RNGs are
    gathered); rank 0 writes it."""
    rng = rng_states(batches, device, world_size)
    checkpoint = dict(model=model.state_dict(), model_config=asdict(model.config),
                      settings=asdict(cfg), meta=meta, iter=it, optimizer=optimizer.state_dict(),
                      scaler=scaler.state_dict(), elapsed=elapsed, rng=rng,
                      world_size=world_size)
    if master:
        save_atomically(checkpoint, path)


def rng_states(batches, device, world_size):
    """Every RNG a resumed run must continue: each rank's torch (and CUDA) state, the batches'."""
    rng = dict(torch=gather(torch.get_rng_state(), world_size), batches=batches.get_state())
    if device.type == 'cuda':
        rng['cuda'] = gather(torch.cuda.get_rng_state(), world_size)
    return rng


# -------------------------------------------------------------------------------------------------
# log.jsonl


def append_log(out_dir, line):
    """log.jsonl: evaluation lines (with val_loss) and step lines (loss and gradient norms)."""
    with open(os.path.join(out_dir, 'log.jsonl'), 'a') as f:
        f.write(json.dumps(line) + '\n')


def truncate_log(out_dir, last_iter):
    """On resume: drop the lines logged after the checkpoint, which the run will log again, and a
    last line cut short by a crash while it was written (said in one line)."""
    path = os.path.join(out_dir, 'log.jsonl')
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number < len(lines):  # damage before the last line is not a cut: keep it all
                fail(f'--resume: {path} line {number} is not JSON; repair or remove that line')
            print(f'{PROG}: --resume: dropped the last line of {path}, cut short while it was '
                  f'written', file=sys.stderr)
            continue
        if record['iter'] <= last_iter:
            kept.append(line if line.endswith('\n') else line + '\n')
    with open(path, 'w') as f:
        f.writelines(kept)
