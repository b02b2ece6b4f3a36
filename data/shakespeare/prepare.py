"""Tiny Shakespeare with GPT-2's BPE tokenizer (tiktoken, vocab 50257): nanoGPT's
data/shakespeare recipe.

    python data/shakespeare/prepare.py [--input PATH]

Without --input it downloads input.txt (1.1 MB) into this folder first. Even with --input it needs
the network once, when tiktoken downloads GPT-2's BPE files, unless NANOLRM_GPT2_BPE names a local
gpt2.tiktoken file. Writes train.bin (301,966 tokens), val.bin (36,059) and meta.json here.
"""
import argparse
import os
import sys
from pathlib import Path

# repo root, so the script can import data.*
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from data.common import prepare_text, run_prepare  # noqa: E402
from data.shakespeare_char.prepare import URL, shakespeare_text  # noqa: E402  (the same text)

FOLDER = os.path.dirname(os.path.abspath(__file__))


def prepare(input_path=None, encoding=None, out_folder=FOLDER):
    """`encoding`: a tiktoken.Encoding to use instead of GPT-2's (tests pass a tiny one)."""
    text = shakespeare_text(input_path, out_folder)
    return prepare_text(text, out_folder, tokenizer='gpt2', encoding=encoding)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(
        description="Tiny Shakespeare with GPT-2's BPE tokenizer (vocab 50257).")
    parser.add_argument('--input', dest='input_path', metavar='PATH',
                        help=f'a local copy of input.txt (default: download {URL})')
    run_prepare(parser, prepare)
