"""
Run train.py over a grid of flag values x seeds, one run after another, and tabulate the results.

    python experiments/sweep.py --out_dir experiments/my_study --grid optimizer=adamw,muon \
        --grid row_mult=0,1 --seeds 3 -- --device cpu --max_iters 2000 --sample_tokens 0

Each --grid name=v1,v2,... is one axis; the sweep runs every combination of the axes, each with
--seeds seeds (--seed, --seed+1, ...). Flags that must change together share one axis, joined
by ':': --grid matrix_lr:matrix_wd=5e-4:20,1e-3:10 runs (5e-4, 20) and (1e-3, 10), not all 4 pairs.
Everything after -- goes to every run. Run <name> trains in out_dir/runs/<name>/ (its log.jsonl,
ckpt.pt and train.log). A run is finished once out_dir/results.json records it: started again,
the sweep skips it, and a run that was cut off continues from its checkpoint (train.py --resume).
out_dir/results.json holds one record per run (final and best val loss, time, the final RMS of each
W~ and multiplier stats); out_dir/results.md the mean and spread over seeds of each grid point (of
every sweep run into out_dir, so several grids can share one table).
To use one core per run and two sweeps side by side: OMP_NUM_THREADS=1 python experiments/sweep.py
"""
import argparse
import fcntl
import hashlib
import itertools
import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # train.py's folder
RECORD_KEYS = ('name', 'point', 'seed', 'status')  # what every record of a results.json holds


def fail(message):
    """One line naming the script that runs (sweep.py, plot.py, a study's run.py), exit code 2."""
    script = sys.argv[0] if sys.argv[0].endswith('.py') else ''
    prog = script if script and os.path.basename(script) != '__main__.py' else 'sweep.py'
    print(f'{prog}: error: {message}', file=sys.stderr)
    sys.exit(2)


def parse_axis(text):
    """'a:b=1:2,3:4' -> [{'a': '1', 'b': '2'}, {'a': '3', 'b': '4'}]: the points of one axis."""
    names, sep, values = text.partition('=')
    names = names.split(':')
    points = [value.split(':') for value in values.split(',')]
    if not sep or not all(names) or any(len(p) != len(names) or not all(p) for p in points):
        fail(f"--grid {text}: expected name=v1,v2,... or name1:name2=a1:b1,a2:b2,...")
    return [dict(zip(names, p)) for p in points]


def run_name(point, seed):
    """The run's folder name: its flags; past 200 characters (a file name may have 255), the
    first 180 and a hash of the whole."""
    name = ','.join(f'{k}={v}' for k, v in {**point, 'seed': seed}.items()).replace('/', '_')
    return name if len(name) <= 200 else f'{name[:180]}-{hashlib.sha1(name.encode()).hexdigest()[:12]}'


def summarize(folder):
    """The record of a finished run, from its log.jsonl evaluation lines."""
    evals = [line for line in read_log(folder) if 'val_loss' in line]
    last = evals[-1]
    return dict(final_val_loss=last['val_loss'], best_val_loss=min(e['val_loss'] for e in evals),
                final_train_loss=last['train_loss'], iters=last['iter'], elapsed=last['elapsed'],
                final={k: v for k, v in last.items() if '.' in k or k.endswith('_rms')})


def mean_std(values):
    """(mean, sample std) of the finite values; std 0 for one value; None for none."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    mean = sum(values) / len(values)
    std = 0.0
    if len(values) > 1:
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return mean, std


def cell(values):
    stats = mean_std(values)
    return 'diverged' if stats is None else f'{stats[0]:.4f} ± {stats[1]:.4f}'


def write_table(records, path):
    """One results.json grid point per row: mean ± std over seeds (sample std; 0 for one seed)."""
    points = list({json.dumps(r['point']): r['point'] for r in records}.values())  # first-run order
    keys = list(dict.fromkeys(k for p in points for k in p))
    header = keys + ['seeds', 'final val loss', 'best val loss', 'time (s)']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * (len(keys) + 4)]
    for point in points:
        runs = [r for r in records if r['point'] == point and r['status'] == 'ok']
        if runs:
            mean_time = sum(r['elapsed'] for r in runs) / len(runs)
            cells = [point.get(k, '') for k in keys] + [
                str(len(runs)), cell([r['final_val_loss'] for r in runs]),
                cell([r['best_val_loss'] for r in runs]), f'{mean_time:.1f}']
            lines.append('| ' + ' | '.join(cells) + ' |')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def add_record(out_dir, record=None):
    """Append a run's record to out_dir/results.json (and rewrite results.md); return all records.

    A file lock makes the read-and-rewrite safe for sweeps side by side in one folder (they should
    run different grid points: each skips only what is recorded when it reaches a run).
    """
    path = os.path.join(out_dir, 'results.json')
    with open(os.path.join(out_dir, '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = read_results(path) if os.path.exists(path) else []
        if record is not None:
            records.append(record)
            with open(path, 'w') as f:
                json.dump(records, f, indent=1)
            write_table(records, os.path.join(out_dir, 'results.md'))
    return records


def run_points(out_dir, points, seeds=(1337,), flags=()):
    """train.py once per point (a dict of flag values) and seed, with flags after the point's;
    return every record of out_dir/results.json. Runs it records already are skipped."""
    os.makedirs(out_dir, exist_ok=True)
    done = {r['name'] for r in add_record(out_dir)}
    for point in points:
        for seed in seeds:
            name = run_name(point, seed)
            if name not in done:
                run_one(out_dir, name, point, seed, flags)
    return add_record(out_dir)


def run_one(out_dir, name, point, seed, flags):
    """One train.py run into out_dir/runs/<name>/ (resumed if it was cut off), then its record."""
    run_dir = os.path.join(out_dir, 'runs', name)
    resume = ['--resume'] if os.path.exists(os.path.join(run_dir, 'ckpt.pt')) else []
    command = [sys.executable, os.path.join(REPO, 'train.py'), *flags,
               *(f'--{k}={v}' for k, v in point.items()),
               f'--seed={seed}', f'--out_dir={run_dir}', *resume]
    print(f"sweep: {name}{' (resumed)' if resume else ''}", flush=True)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, 'train.log'), 'a') as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    if code < 0:  # stopped by a signal (Ctrl-C, kill): no result; the next sweep resumes it
        fail(f'{name} was stopped by signal {-code}; run the same command again to resume it')
    if code == 2:  # a bad flag or setting, or a damaged checkpoint: train.py said which
        with open(os.path.join(run_dir, 'train.log')) as log:
            said = ([line.strip() for line in log if line.strip()] or ['(nothing)'])[-1]
        fail(f'{name}: {said} (see {run_dir}/train.log)')
    status = 'ok' if code == 0 else f'exit {code}'
    record = dict(name=name, point=point, seed=seed, status=status)
    if code == 0:
        record.update(summarize(run_dir))
        print(f"sweep: {name}: final val loss {record['final_val_loss']:.4f}", flush=True)
    add_record(out_dir, record)


# -------------------------------------------------------------------------------------------------
# reading what runs leave behind: every tool under experiments/ reads results.json, log.jsonl and
# ckpt.pt through these, which answer a missing, empty or damaged file in one line (exit 2)


def read_json(path, what_to_do):
    """The contents of a JSON file; missing, empty or not JSON: one line saying what_to_do."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as err:
        fail(f'cannot read {path} ({err.strerror}): {what_to_do}')
    if not text.strip():
        fail(f'{path} is empty: {what_to_do}')
    try:
        return json.loads(text)
    except ValueError as err:  # JSONDecodeError: cut or damaged
        fail(f'{path} is not valid JSON ({err}): {what_to_do}')


def read_results(path):
    """The records of a sweep's results.json, each with RECORD_KEYS."""
    if not os.path.exists(path):
        fail(f'no {path}: pass the results.json that sweep.py writes into its --out_dir')
    what_to_do = 'restore it (git checkout) or move it aside to run the sweep again'
    records = read_json(path, what_to_do)
    if not isinstance(records, list) or not all(
            isinstance(r, dict) and all(k in r for k in RECORD_KEYS) for r in records):
        fail(f"{path} is not a list of run records ({', '.join(RECORD_KEYS)}): {what_to_do}")
    return records


def run_folder(out_dir, record):
    """The folder of a run that out_dir/results.json records; missing (run folders are not
    committed): one line saying how to make it again."""
    folder = os.path.join(out_dir, 'runs', record['name'])
    if not os.path.isdir(folder):
        fail(f"no run folder {folder} (run folders are not committed): move "
             f"{os.path.join(out_dir, 'results.json')} aside and run this again to train its runs")
    return folder


def read_log(folder):
    """Every line of the log.jsonl of a train.py --out_dir, as dicts; at least one evaluation."""
    path = os.path.join(folder, 'log.jsonl')
    what_to_do = 'pass a folder that train.py wrote (its --out_dir), or train that run again'
    if not os.path.isdir(folder):
        fail(f'no run folder {folder}: {what_to_do}')
    try:
        with open(path) as f:
            texts = f.read().splitlines()
    except OSError as err:
        fail(f'cannot read {path} ({err.strerror}): {what_to_do}')
    lines = []
    for number, text in enumerate(texts, 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            fail(f'{path}: line {number} is not a JSON object (cut by a crash?): delete it, or '
                 'train that run again')
        lines.append(line)
    if not any('val_loss' in line for line in lines):
        fail(f"{path} {'has no evaluation line' if lines else 'is empty'}: {what_to_do}")
    return lines


def read_checkpoint(folder):
    """The ckpt.pt of a train.py --out_dir (runtime.load_checkpoint: one line if damaged)."""
    path = os.path.join(folder, 'ckpt.pt')
    if not os.path.exists(path):
        fail(f'{path} is missing: pass a folder that train.py wrote, or train that run again')
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from runtime import load_checkpoint  # torch: imported by the tools that read checkpoints only
    return load_checkpoint(path, folder)


# -------------------------------------------------------------------------------------------------
# the command line


def main(argv):
    extra = []
    if '--' in argv:  # everything after -- goes to every run
        argv, extra = argv[:argv.index('--')], argv[argv.index('--') + 1:]
    parser = argparse.ArgumentParser(prog='sweep.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--out_dir', required=True,
                        help='where runs/, results.json and results.md go')
    parser.add_argument('--grid', action='append', default=[], help='name=v1,v2,... (repeatable)')
    parser.add_argument('--seeds', type=int, default=1, help='seeds per grid point')
    parser.add_argument('--seed', type=int, default=1337, help='the first seed')
    args = parser.parse_args(argv)
    if args.seeds < 1:
        fail(f'--seeds {args.seeds} must be >= 1')
    taken = [a for a in extra if a.split('=')[0] in ('--out_dir', '--seed', '--resume')]
    if taken:
        fail(f'{taken[0]} after --: '
             'the sweep sets --out_dir, --seed and --resume of each run itself')
    axes = [parse_axis(text) for text in args.grid] or [[{}]]
    points = [dict(kv for p in combo for kv in p.items()) for combo in itertools.product(*axes)]
    return run_points(args.out_dir, points, range(args.seed, args.seed + args.seeds), extra)


if __name__ == '__main__':
    main(sys.argv[1:])
