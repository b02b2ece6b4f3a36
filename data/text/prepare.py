"""Any UTF-8 text file as a nanoLRM dataset: your own corpus is one command away.

    python data/text/prepare.py --input any.txt --tokenizer char|byte|gpt2 [--out data/mytext]
                                [--val_fraction 0.1]
    python train.py --dataset mytext

char: one token per distinct character (the vocabulary is stored in meta.json); byte: the 256 UTF-8
byte values, any text fits; gpt2: GPT-2's BPE via tiktoken (vocab 50257, downloads its files once).
The last val_fraction of the tokens is the validation split.
"""
import argparse
import os
import sys
from pathlib import Path

# repo root, so the script can import data.*
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from data.common import prepare_text, read_text, run_prepare  # noqa: E402

FOLDER = os.path.dirname(os.path.abspath(__file__))


def prepare(input_path=None, out_folder=FOLDER, tokenizer='char', val_fraction=0.1, encoding=None):
    """Tokenize the file at input_path into out_folder (train.py passes its --input)."""
    if input_path is None:  # there is nothing to download: the text is yours
        raise ValueError("data/text tokenizes a file you give: pass it with --input PATH")
    return prepare_text(read_text(input_path), out_folder, tokenizer, val_fraction, encoding)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(
        description='Tokenize a UTF-8 text file into a nanoLRM dataset folder.')
    parser.add_argument('--input', dest='input_path', required=True, metavar='PATH',
                        help='the text file to tokenize')
    parser.add_argument('--tokenizer', default='char', choices=['char', 'byte', 'gpt2'],
                        help='default: char')
    parser.add_argument('--out', dest='out_folder', default=FOLDER, metavar='FOLDER',
                        help='where to write train.bin, val.bin, meta.json (default: data/text); '
                             'train.py finds data/<name> as --dataset <name>')
    parser.add_argument('--val_fraction', type=float, default=0.1,
                        help='the last fraction of the tokens, kept for validation (default: 0.1)')
    run_prepare(parser, prepare)
