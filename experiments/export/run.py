"""
The Hugging Face export in llama.cpp: three tiny models (GPT-2 BPE, char, byte) exported with
export.py --hf, converted by llama.cpp's convert_hf_to_gguf.py under transformers 4.57 (the
version the converter pins) and under this environment's transformers (5.x), then compared with
transformers and with sample.py --fold: tokenizer ids, greedy tokens, logits.

    python experiments/export/run.py                  # ~20 min on 2 CPU cores, half of it the build
    python experiments/export/run.py --work /tmp/x    # where the build, venvs and models go
    python experiments/export/run.py --update_committed   # results.json beside this file too

Needs, besides pip's network (llama-cpp-python's sdist, transformers 4.57.6, sentencepiece), two
files that it reads offline and checks before the build: tiny-shakespeare ($TINYSHAKESPEARE, else
../shared/data/tinyshakespeare/input.txt beside the repo) and GPT-2's BPE ranks ($NANOLRM_GPT2_BPE,
a gpt2.tiktoken file; unset, tiktoken downloads them).

Not part of the tests: it downloads with pip and builds llama.cpp (minutes). Every step is skipped
when its output exists, so a second run only compares. llama.cpp is the source that the
llama-cpp-python sdist bundles (vendor/llama.cpp, with convert_hf_to_gguf.py and gguf-py), built
by pip into a wheel; its Python binding gives llama.cpp's tokens and logits (compare.py). Two venvs
are made under --work; each also sees this interpreter's packages (torch, transformers 5), behind
its own: one with that wheel (it runs the converter under transformers 5 and compare.py), one with
transformers 4.57 (the converter under 4.57). The converter also needs sentencepiece in both.
Prints a table and writes results.json into --work; the committed results.json beside this file is
rewritten only with --update_committed.
"""
import argparse
import filecmp
import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA_CPP_PYTHON = '0.3.36'
OLD_TRANSFORMERS = '4.57.6'  # vendor/llama.cpp/requirements/requirements-convert_hf_to_gguf.txt
CMAKE_ARGS = ('-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF '
              '-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF')  # the library alone
TEXT = os.environ.get('TINYSHAKESPEARE',  # tiny-shakespeare, as the tests find it
                      os.path.join(REPO, '../shared/data/tinyshakespeare/input.txt'))
# a tiny model with every multiplier: 2 layers, width 64, block 64, 200 steps at an LR high enough
# that greedy decoding writes varied text (at the default 1e-4 GPT-2's writes newlines only); the
# RMSNorm gains and the multipliers at that LR too
TRAIN = ['--device', 'cpu', '--n_layer', '2', '--n_head', '2', '--n_embd', '64', '--block_size',
         '64', '--batch_size', '8', '--max_iters', '200', '--eval_interval', '200', '--eval_iters',
         '5', '--learning_rate', '3e-3', '--gain_lr', '3e-3', '--mult_lr', '3e-3',
         '--sample_tokens', '0', '--scalar_mult', '--row_mult', '--col_mult']
TOKENIZERS = ('gpt2', 'char', 'byte')


def check_inputs():
    """The files the run reads offline, checked before the minutes of the build: one line each."""
    if not os.path.isfile(TEXT):
        sys.exit(f'run.py: error: no tiny-shakespeare at {TEXT}: set TINYSHAKESPEARE to its '
                 'input.txt')
    sys.path.insert(0, REPO)
    from data.common import GPT2_BPE_ENV, gpt2_encoding
    try:
        gpt2_encoding()  # the $NANOLRM_GPT2_BPE file, else tiktoken's download
    except OSError as err:
        sys.exit(f"run.py: error: GPT-2's BPE ranks are not at hand ({err}): set "
                 f'{GPT2_BPE_ENV} to a gpt2.tiktoken file')


def sh(*cmd, env=None, cwd=None):
    """Run a command, echoed; its exit code and the last line it wrote to stderr."""
    print('$', ' '.join(cmd), flush=True)
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, cwd=cwd, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return proc.returncode, proc.stdout, err_lines[-1] if err_lines else ''


def must(*cmd, **kwargs):
    code, out, last_err = sh(*cmd, **kwargs)
    if code:
        sys.exit(f'failed ({code}): {last_err}')
    return out


def llama_cpp_source(work):
    """vendor/llama.cpp of the llama-cpp-python sdist (downloaded and unpacked once)."""
    sdist = os.path.join(work, f'llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz')
    if not os.path.exists(sdist):
        must(sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:',
             f'llama-cpp-python=={LLAMA_CPP_PYTHON}', '-d', work)
    folder = sdist.removesuffix('.tar.gz')
    if not os.path.isdir(folder):
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter='data')
    return sdist, os.path.join(folder, 'vendor/llama.cpp')


def make_venv(folder, *pip_args):
    """A venv with pip_args installed, which also sees this interpreter's packages behind its own
    (a .pth line appends them to sys.path): torch is not installed twice."""
    python = os.path.join(folder, 'bin/python')
    if os.path.exists(python):
        return python
    must(sys.executable, '-m', 'venv', folder)
    must(python, '-m', 'pip', 'install', '-q', *pip_args)
    site = sysconfig.get_paths()['purelib']
    venv_site = must(python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    with open(os.path.join(venv_site.strip(), 'behind_own.pth'), 'w') as f:
        f.write(site + '\n')
    return python


def llama_cpp_wheel(work, sdist):
    """llama-cpp-python built from the sdist on this CPU (the C++ library: minutes)."""
    wheels = glob.glob(os.path.join(work, 'wheels', 'llama_cpp_python-*.whl'))
    if not wheels:
        must(sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-w', os.path.join(work, 'wheels'),
             sdist, env=dict(CMAKE_ARGS=CMAKE_ARGS, CMAKE_BUILD_PARALLEL_LEVEL='2'))
        wheels = glob.glob(os.path.join(work, 'wheels', 'llama_cpp_python-*.whl'))
    return wheels[0]


def trained_export(work, tokenizer):
    """The tokenizer's dataset, a tiny model trained on it, and its export --hf folder."""
    data, out_dir = (os.path.join(work, f'{name}_{tokenizer}') for name in ('data', 'model'))
    if not os.path.exists(os.path.join(data, 'meta.json')):
        must(sys.executable, 'data/text/prepare.py', '--input', TEXT, '--tokenizer', tokenizer,
             '--out', data, cwd=REPO)
    if not os.path.exists(os.path.join(out_dir, 'ckpt.pt')):
        must(sys.executable, 'train.py', '--dataset', data, '--out_dir', out_dir, *TRAIN, cwd=REPO)
    hf = os.path.join(out_dir, 'hf')
    export_out = must(sys.executable, 'export.py', '--out_dir', out_dir, '--hf', hf, cwd=REPO)
    note = [line for line in export_out.splitlines() if 'llama.cpp' in line]
    return out_dir, hf, note[0] if note else ''


def convert(llama_cpp, python, hf, gguf):
    """convert_hf_to_gguf.py on an export (float32 weights): 'ok' or the error's last line."""
    env = dict(PYTHONPATH=os.path.join(llama_cpp, 'gguf-py'), HF_HUB_OFFLINE='1')
    code, _, last_err = sh(python, os.path.join(llama_cpp, 'convert_hf_to_gguf.py'), hf,
                           '--outfile', gguf, '--outtype', 'f32', env=env)
    return 'ok' if code == 0 else last_err


def convert_as_transformers_5_names_it(llama_cpp, python, hf, gguf):
    """The converter on a copy of the export whose tokenizer class is "TokenizersBackend", the name
    transformers 5 writes by itself (export.py writes "PreTrainedTokenizerFast")."""
    copy = f'{hf}_tokenizers_backend'
    shutil.copytree(hf, copy, dirs_exist_ok=True)
    path = os.path.join(copy, 'tokenizer_config.json')
    with open(path) as f:
        config = json.load(f)
    with open(path, 'w') as f:
        json.dump(config | dict(tokenizer_class='TokenizersBackend'), f)
    return convert(llama_cpp, python, copy, gguf)


def versions(python):
    code = 'import torch, transformers; print(torch.__version__, transformers.__version__)'
    return must(python, '-c', code).split()


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work', default='/tmp/nanolrm_llama_cpp',
                        help='build, venvs, models and results.json')
    parser.add_argument('--update_committed', action='store_true',
                        help='also rewrite the committed results.json beside this script')
    args = parser.parse_args(argv)
    work = args.work
    check_inputs()
    os.makedirs(work, exist_ok=True)
    sdist, llama_cpp = llama_cpp_source(work)
    old_python = make_venv(os.path.join(work, 'venv-transformers-4.57'),
                           f'transformers=={OLD_TRANSFORMERS}', 'sentencepiece')
    llama_python = make_venv(os.path.join(work, 'venv-llama-cpp'), llama_cpp_wheel(work, sdist),
                             'sentencepiece')
    results = dict(versions=dict(llama_cpp_python=LLAMA_CPP_PYTHON,
                                 torch_transformers_new=versions(llama_python),
                                 torch_transformers_old=versions(old_python)), models={})
    for tokenizer in TOKENIZERS:
        out_dir, hf, note = trained_export(work, tokenizer)
        row = results['models'][tokenizer] = dict(export_note=note)
        for label, python in (('transformers_old', old_python), ('transformers_new', llama_python)):
            gguf = os.path.join(out_dir, f'model-{label}.gguf')
            row[f'convert_{label}'] = convert(llama_cpp, python, hf, gguf)
            if row[f'convert_{label}'] == 'ok':
                out = must(llama_python, os.path.join(HERE, 'compare.py'), '--out_dir', out_dir,
                           '--hf', hf, '--gguf', gguf, '--text', TEXT, cwd=REPO)
                row[f'compare_{label}'] = json.loads(out.splitlines()[-1])
        ggufs = [os.path.join(out_dir, f'model-{label}.gguf') for label in ('transformers_old',
                                                                            'transformers_new')]
        if all(os.path.exists(gguf) for gguf in ggufs):
            row['ggufs_byte_identical'] = filecmp.cmp(*ggufs, shallow=False)
        if tokenizer == 'gpt2':
            gguf = os.path.join(out_dir, 'model-tokenizers-backend.gguf')
            row['convert_transformers_old_if_named_TokenizersBackend'] = \
                convert_as_transformers_5_names_it(llama_cpp, old_python, hf, gguf)
    for folder in [work] + ([HERE] if args.update_committed else []):
        with open(os.path.join(folder, 'results.json'), 'w') as f:
            json.dump(results, f, indent=1)
        print(f"wrote {os.path.join(folder, 'results.json')}")
    print_table(results)


def print_table(results):
    v = results['versions']
    print(f"\nllama-cpp-python {v['llama_cpp_python']} (its vendor/llama.cpp); torch and "
          f"transformers {' '.join(v['torch_transformers_new'])} (new), "
          f"{' '.join(v['torch_transformers_old'])} (old: the converter's pin)")
    for tokenizer, row in results['models'].items():
        for label in ('transformers_old', 'transformers_new'):
            print(f"{tokenizer:5} convert under {label}: {row[f'convert_{label}']}")
            for key, value in row.get(f'compare_{label}', {}).items():
                print(f'      {key}: {value}')
        for key in ('ggufs_byte_identical', 'convert_transformers_old_if_named_TokenizersBackend'):
            if key in row:
                print(f'      {key}: {row[key]}')
        if row['export_note']:
            print(f"      export.py says: {row['export_note']}")


if __name__ == '__main__':
    main(sys.argv[1:])
