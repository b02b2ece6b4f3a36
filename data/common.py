"""The one on-disk format of every nanoLRM dataset, and the helpers that write and read it.

A dataset is a folder data/<name>/ with a meta.json and token files:
    meta.json  {"vocab_size": 65, "tokenizer": "char" | "byte" | "gpt2", "dtype": "uint16",
                "header_bytes": 0 | 1024, "train": ["train.bin"], "val": ["val.bin"],
                "chars": "..."}   # "chars" only for tokenizer "char": the vocabulary in id order
    *.bin      uint16 token ids, after header_bytes of header: 0 for the files we write,
               1024 for FineWeb shards (256 int32s: magic 20240520, version 1, token count, zeros).
train.py reads every dataset through TokenData, with no per-dataset code.
"""
import http.client
import importlib
import json
import os
import shutil
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import torch

TOKEN_DTYPE = np.uint16  # GPT-2's 50257 ids fit; half the disk and RAM of int32
META_KEYS = ('vocab_size', 'tokenizer', 'dtype', 'header_bytes', 'train', 'val')
FINEWEB_MAGIC, FINEWEB_VERSION, FINEWEB_HEADER_BYTES = 20240520, 1, 1024
DATA_ROOT = os.path.dirname(os.path.abspath(__file__))  # data/: one folder per dataset
# GPT-2's BPE without the network: a .tiktoken file of its ranks, named by this environment variable
GPT2_BPE_ENV = 'NANOLRM_GPT2_BPE'
# GPT-2's pre-split
GPT2_PATTERN = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"


# ----------------------------------------------------------------------------- writing

def check_tokens(ids, where, vocab_size=None):
    """Raise a one-line ValueError unless ids is a non-empty array that fits in uint16 (and in
    the vocabulary, when its size is given)."""
    if len(ids) == 0:
        raise ValueError(f"no tokens to write to {where}")
    if ids.min() < 0 or ids.max() > np.iinfo(TOKEN_DTYPE).max:
        raise ValueError(f"token ids {ids.min()}..{ids.max()} for {where} do not fit in uint16 "
                         f"(vocab must be <= 65536)")
    if vocab_size is not None and ids.max() >= vocab_size:
        raise ValueError(f"token id {ids.max()} for {where} is beyond the tokenizer's vocabulary "
                         f"of {vocab_size}")


def write_tokens(path, ids):
    """Write token ids as raw uint16, atomically: a crash never leaves half a file under `path`."""
    ids = np.asarray(ids)
    check_tokens(ids, path)
    tmp = f"{path}.tmp"
    ids.astype(TOKEN_DTYPE).tofile(tmp)
    os.replace(tmp, path)


def write_meta(folder, meta):
    """Write meta.json atomically, and last: a folder with a meta.json is a complete dataset."""
    path = os.path.join(folder, 'meta.json')
    with open(f"{path}.tmp", 'w') as f:
        json.dump(meta, f, indent=1)
    os.replace(f"{path}.tmp", path)


def read_meta(folder):
    """meta.json of a dataset folder, checked for the keys every dataset has."""
    path = os.path.join(folder, 'meta.json')
    try:
        with open(path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: run the dataset's prepare.py first") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or any(key not in meta for key in META_KEYS):
        raise ValueError(f"{path} must be a JSON object with the keys {', '.join(META_KEYS)}")
    if meta['dtype'] != 'uint16' or meta['header_bytes'] not in (0, FINEWEB_HEADER_BYTES):
        raise ValueError(f"{path}: expected dtype uint16 and header_bytes 0 or 1024")
    return meta


# ----------------------------------------------------------------------------- tokenizers

class CharTokenizer:
    """One token per character; `chars` is the vocabulary in id order."""

    def __init__(self, chars):
        self.chars, self.vocab_size = chars, len(chars)
        self.id_of = {c: i for i, c in enumerate(chars)}

    def encode(self, text):
        try:
            return [self.id_of[c] for c in text]
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids):
        return ''.join(self.chars[i] for i in ids)


def gpt2_encoding():
    """GPT-2's BPE: read from the .tiktoken file $NANOLRM_GPT2_BPE names, else tiktoken's
    (downloaded once)."""
    import tiktoken  # only this tokenizer needs tiktoken
    path = os.environ.get(GPT2_BPE_ENV)
    if not path:
        return tiktoken.get_encoding('gpt2')
    from tiktoken.load import load_tiktoken_bpe
    if not os.path.exists(path):
        raise FileNotFoundError(f'${GPT2_BPE_ENV}: no file {path}')
    return tiktoken.Encoding('gpt2', pat_str=GPT2_PATTERN, mergeable_ranks=load_tiktoken_bpe(path),
                             special_tokens={'<|endoftext|>': 50256})


def get_tokenizer(meta, encoding=None):
    """The tokenizer meta names: .encode(str) -> list[int], .decode(list[int]) -> str, .vocab_size.
    `encoding` replaces GPT-2's encoding (tests pass a tiny one)."""
    kind = meta['tokenizer']
    if kind == 'char':
        return CharTokenizer(meta['chars'])
    if kind == 'byte':  # decode with 'replace': sampled ids may cut a multi-byte character in half
        return SimpleNamespace(vocab_size=256, encode=lambda text: list(text.encode('utf-8')),
                               decode=lambda ids: bytes(ids).decode('utf-8', errors='replace'))
    if kind == 'gpt2':
        try:
            enc = encoding or gpt2_encoding()
        except OSError as err:  # tiktoken's first use downloads the BPE files
            message = (f"tiktoken could not fetch GPT-2's BPE files (needed once; offline, set "
                       f"${GPT2_BPE_ENV} to a gpt2.tiktoken file): {err}")
            raise RuntimeError(message) from None
        special = {'<|endoftext|>'}
        return SimpleNamespace(vocab_size=enc.n_vocab, decode=enc.decode,
                               encode=lambda text: enc.encode(text, allowed_special=special))
    raise ValueError(f"unknown tokenizer {kind!r}: expected char, byte or gpt2")


def read_text(path):
    """The contents of a UTF-8 text file, with a one-line error for the usual mistakes."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"input file {path} not found") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"input file {path} is not UTF-8 text: {err}") from None
    if not text:
        raise ValueError(f"input file {path} is empty: nothing to tokenize")
    return text


def prepare_text(text, out_folder, tokenizer='char', val_fraction=0.1, encoding=None):
    """Split text into its first 1 - val_fraction (train) and the rest (val), as nanoGPT splits it,
    tokenize each, write train.bin, val.bin and then meta.json into out_folder; return the meta."""
    if not text:
        raise ValueError("the input text is empty: nothing to tokenize")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    chars = ''.join(sorted(set(text))) if tokenizer == 'char' else None  # vocabulary in id order
    tok = get_tokenizer({'tokenizer': tokenizer, 'chars': chars}, encoding)
    meta = {'vocab_size': tok.vocab_size, 'tokenizer': tokenizer, 'dtype': 'uint16',
            'header_bytes': 0, 'train': ['train.bin'], 'val': ['val.bin']}
    if chars:
        meta['chars'] = chars
    split = int(len(text) * (1 - val_fraction))  # split the text, not the tokens: nanoGPT's counts
    train_ids = np.array(tok.encode(text[:split]), dtype=np.int64)
    val_ids = np.array(tok.encode(text[split:]), dtype=np.int64)
    check_tokens(train_ids, 'train.bin', tok.vocab_size)  # both splits before writing either
    check_tokens(val_ids, 'val.bin', tok.vocab_size)
    os.makedirs(out_folder, exist_ok=True)
    old_meta = os.path.join(out_folder, 'meta.json')
    if os.path.exists(old_meta):
        os.remove(old_meta)  # it would describe a half-rewritten folder until the new one exists
    write_tokens(os.path.join(out_folder, 'train.bin'), train_ids)
    write_tokens(os.path.join(out_folder, 'val.bin'), val_ids)
    write_meta(out_folder, meta)
    print(f"{out_folder}: {len(train_ids):,} train + {len(val_ids):,} val tokens, "
          f"{tokenizer} vocab {tok.vocab_size}")
    return meta


# ----------------------------------------------------------------------------- reading

def check_fineweb_header(path):
    """Check a FineWeb shard's header (magic, version, token count vs size); return the count."""
    header = np.fromfile(path, dtype=np.int32, count=FINEWEB_HEADER_BYTES // 4)
    if len(header) < FINEWEB_HEADER_BYTES // 4 or header[0] != FINEWEB_MAGIC:
        raise ValueError(f"{path} is not a FineWeb shard (no header with magic {FINEWEB_MAGIC})")
    if header[1] != FINEWEB_VERSION:
        raise ValueError(f"{path} has FineWeb version {header[1]}, expected {FINEWEB_VERSION}")
    num_tokens, size = int(header[2]), os.path.getsize(path)
    if num_tokens <= 0 or size != FINEWEB_HEADER_BYTES + 2 * num_tokens:
        raise ValueError(f"{path} has {size} bytes but its header promises {num_tokens} tokens: "
                         f"truncated? delete it and prepare again")
    return num_tokens


def open_tokens(path, header_bytes):
    """Memory-map one token file (nothing is read into RAM) after checking its size and header."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}, listed in meta.json, is missing")
    size = os.path.getsize(path)
    if header_bytes:
        check_fineweb_header(path)
    elif size == 0 or size % 2:
        raise ValueError(f"{path} has {size} bytes: not a non-empty file of uint16 tokens")
    return np.memmap(path, dtype=TOKEN_DTYPE, mode='r', offset=header_bytes)


class VocabularyError(ValueError):
    """A token file holds ids beyond its dataset's vocabulary."""


class TokenData:
    """A dataset folder, memory-mapped: samples random windows from its train or val files.
    Each file's token ids are checked against the vocabulary when a batch first reads it (one max
    over the file): a file written with another tokenizer fails in one line, not in the model."""

    def __init__(self, folder):
        self.folder, self.meta = folder, read_meta(folder)
        self.vocab_size = self.meta['vocab_size']
        self.files = {split: [open_tokens(os.path.join(folder, name), self.meta['header_bytes'])
                              for name in self.meta[split]] for split in ('train', 'val')}
        self.checked = set()  # (split, file index) whose ids are known to fit the vocabulary

    def check_vocabulary(self, split, i):
        """ValueError unless every id in file i of split is < vocab_size (once per file)."""
        if (split, i) not in self.checked:
            largest = int(self.files[split][i].max())
            if largest >= self.vocab_size:
                path = os.path.join(self.folder, self.meta[split][i])
                raise VocabularyError(f"{path} holds token id {largest}, beyond the vocabulary of "
                                 f"{self.vocab_size} in meta.json (written with another "
                                 "tokenizer?)")
            self.checked.add((split, i))

    def num_tokens(self, split):
        return sum(len(f) for f in self.files[split])

    def get_batch(self, split, batch_size, block_size, generator, rows=slice(None)):
        """(x, y) int64 of shape (batch_size, block_size), y = x shifted by one token.
        Windows are uniform over all windows of the split and never cross a file boundary; the only
        randomness is `generator`, so restoring its state reproduces the batches exactly.
        rows: build only these rows of the batch (under DDP: each rank's share of one batch)."""
        files = self.files[split]
        # a window: block_size + 1 consecutive tokens of one file; n tokens hold n - block_size
        counts = torch.tensor([max(len(f) - block_size, 0) for f in files], dtype=torch.int64)
        if counts.sum() == 0:
            longest = max((len(f) for f in files), default=0)
            raise ValueError(f"the {split} files of {self.folder} are too short for block_size "
                             f"{block_size}: the longest has {longest} tokens, a window needs "
                             f"{block_size + 1}")
        ends = counts.cumsum(0)  # windows ends[i] - counts[i] .. ends[i] - 1 belong to file i
        # uniform over all windows
        picks = torch.randint(int(ends[-1]), (batch_size,), generator=generator)
        for i in torch.searchsorted(ends, picks, right=True).unique().tolist():
            self.check_vocabulary(split, i)  # every rank checks the whole batch's files alike
        picks = picks[rows]
        file_ids = torch.searchsorted(ends, picks, right=True)
        starts = picks - (ends[file_ids] - counts[file_ids])  # where each window starts in its file
        tokens = torch.stack([torch.from_numpy(files[f][s:s + block_size + 1].astype(np.int64))
                              for f, s in zip(file_ids.tolist(), starts.tolist())])
        return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()  # a loss may .view() them


# ----------------------------------------------------------------------------- loading

def dataset_folder(dataset):
    """A dataset's folder: `dataset` itself if it is one, else data/<dataset>/."""
    return dataset if os.path.isdir(dataset) else os.path.join(DATA_ROOT, dataset)


def load_dataset(dataset, input_path=None):
    """The dataset's tokens, as a TokenData. A missing dataset is made first by its
    data/<name>/prepare.py, whose prepare(input_path=None) every dataset defines (input_path: a
    local text in place of the download). Fails with a one-line OSError or ValueError."""
    folder = dataset_folder(dataset)
    if not os.path.exists(os.path.join(folder, 'meta.json')):
        try:
            prepare = importlib.import_module(f'data.{dataset}.prepare').prepare
        except ImportError:
            raise FileNotFoundError(f'no {folder}/meta.json and no prepare.py for it') from None
        print(f'{folder}/meta.json is missing: preparing the dataset first')
        prepare(input_path=input_path)
    return TokenData(folder)


def keep_text(input_path, path):
    """Copy the text a dataset was prepared from to path (where its download would be), atomically,
    unless it is there: the tests and the next prepare then find it offline."""
    if not os.path.exists(path) and os.path.abspath(input_path) != os.path.abspath(path):
        shutil.copyfile(input_path, f'{path}.tmp')
        os.replace(f'{path}.tmp', path)


# ----------------------------------------------------------------------------- downloading

def download(url, path, chunk_bytes=1 << 20):
    """Download url to path. Bytes land in path + '.part' first, so an interrupted download resumes
    (HTTP Range) on the next call, and path exists only once complete."""
    part, name = f"{path}.part", os.path.basename(path)
    done = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={'Range': f'bytes={done}-'} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if response.status != 206:  # the server ignored Range: start again from zero
                done = 0
            length = response.headers.get('Content-Length')
            total = done + int(length) if length else None
            of_total = f" / {total / 1e6:.1f}" if total else ""
            with open(part, 'ab' if done else 'wb') as f:
                while chunk := response.read(chunk_bytes):
                    f.write(chunk)
                    done += len(chunk)
                    print(f"\r{name}: {done / 1e6:.1f}{of_total} MB", end='', flush=True)
        print()
    except urllib.error.HTTPError as err:
        err.close()  # an HTTP error response keeps its connection open
        if err.code == 416 and done:  # Range Not Satisfiable: the .part holds every byte, or more
            if err.headers.get('Content-Range') == f'bytes */{done}':
                os.replace(part, path)  # whole: an earlier run stopped just before renaming it
                return
            os.remove(part)  # not a prefix of this file: start again from zero
            return download(url, path, chunk_bytes)
        raise RuntimeError(f"could not download {url}: {err}") from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise RuntimeError(f"could not download {url}: {err}") from None
    if total is not None and done != total:
        raise RuntimeError(f"could not download {url}: got {done} of {total} bytes; "
                           "run again to resume")
    os.replace(part, path)


# ----------------------------------------------------------------------------- prepare.py scripts

def run_prepare(parser, prepare):
    """A prepare.py script's main: prepare(**flags) (each flag's dest is a parameter of prepare).
    Errors the user can fix (no file, no network, bad data) print one line and exit with code 2."""
    try:
        prepare(**vars(parser.parse_args()))
    except (OSError, ValueError, RuntimeError) as err:
        parser.exit(2, f"error: {err}\n")
