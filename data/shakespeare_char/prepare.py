"""Tiny Shakespeare, one token per character (vocab 65): nanoGPT's data/shakespeare_char recipe.

    python data/shakespeare_char/prepare.py [--input PATH]

Without --input it downloads input.txt (1.1 MB) into this folder first. Writes train.bin
(1,003,854 tokens), val.bin (111,540 tokens) and meta.json here. train.py calls prepare() when
meta.json is missing.
"""
import argparse
import os
import sys
from pathlib import Path

# repo root, so the script can import data.*
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from data.common import download, keep_text, prepare_text, read_text, run_prepare  # noqa: E402

URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
FOLDER = os.path.dirname(os.path.abspath(__file__))


def shakespeare_text(input_path=None, folder=FOLDER):
    """The tiny Shakespeare text: from input_path if given (and then kept as folder/input.txt, as
    the download is), else from folder/input.txt (downloaded once)."""
    if input_path is not None:
        text = read_text(input_path)
        os.makedirs(folder, exist_ok=True)
        keep_text(input_path, os.path.join(folder, 'input.txt'))
        return text
    input_path = os.path.join(folder, 'input.txt')
    if not os.path.exists(input_path):  # download() renames only a complete file to input.txt
        os.makedirs(folder, exist_ok=True)
        try:
            download(URL, input_path)
        except RuntimeError as err:
            # train.py has the same --input flag, so this advice holds there too
            raise RuntimeError(f"{err}; no network? pass a local copy with --input PATH") from None
    return read_text(input_path)


def prepare(input_path=None, out_folder=FOLDER):
    """train.py calls prepare(input_path=its --input or None) when this folder has no meta.json."""
    return prepare_text(shakespeare_text(input_path, out_folder), out_folder, tokenizer='char')


if __name__ == '__main__':
    parser = argparse.ArgumentParser(
        description='Tiny Shakespeare, one token per character (vocab 65).')
    parser.add_argument('--input', dest='input_path', metavar='PATH',
                        help=f'a local copy of input.txt (default: download {URL})')
    run_prepare(parser, prepare)
