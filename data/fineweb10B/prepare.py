"""FineWeb-10B pretokenized with GPT-2's BPE: the shards the modded-nanogpt speedrun trains on.

    python data/fineweb10B/prepare.py [--num_train_shards 8]

Downloads fineweb_val_000000.bin and fineweb_train_000001.bin ... from the Hugging Face dataset
kjj0/fineweb10B-gpt2. Each shard is ~100M tokens (~200 MB): a 1024-byte header (256 int32s: magic
20240520, version 1, token count) then uint16 tokens. The shards stay as they are (meta.json says
header_bytes 1024), so TokenData memory-maps them directly. Re-running resumes where it stopped.
"""
import argparse
import os
import sys
from pathlib import Path

# repo root, so the script can import data.*
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from data.common import (FINEWEB_HEADER_BYTES, check_fineweb_header, download,  # noqa: E402
                         run_prepare, write_meta)

DEFAULT_BASE_URL = 'https://huggingface.co/datasets/kjj0/fineweb10B-gpt2/resolve/main'
GPT2_VOCAB_SIZE = 50257
FOLDER = os.path.dirname(os.path.abspath(__file__))


def shard_names(num_train_shards):
    """The val shard and the first num_train_shards train shards (numbered from 1)."""
    train_files = [f'fineweb_train_{i:06d}.bin' for i in range(1, num_train_shards + 1)]
    return ['fineweb_val_000000.bin'], train_files


def prepare(input_path=None, num_train_shards=None, base_url=DEFAULT_BASE_URL, out_folder=FOLDER):
    """Download (or finish downloading) the val shard and num_train_shards train shards, check each
    header, then write meta.json. Files already complete are not fetched again.

    Like every prepare(), it takes input_path (train.py passes its --input), but FineWeb comes
    only as shards, and a download of gigabytes is never started without num_train_shards chosen
    by the user.
    """
    if input_path:
        raise ValueError(f"fineweb10B is downloaded as token shards, not made from a text "
                         f"({input_path}): drop --input")
    if num_train_shards is None or num_train_shards < 1:
        raise ValueError("choose the number of ~100M-token shards first: "
                         "python data/fineweb10B/prepare.py --num_train_shards N")
    val_files, train_files = shard_names(num_train_shards)
    os.makedirs(out_folder, exist_ok=True)
    if os.path.exists(os.path.join(out_folder, 'meta.json')):
        # it may list shards we have not checked yet
        os.remove(os.path.join(out_folder, 'meta.json'))
    num_tokens = 0
    for name in val_files + train_files:
        path = os.path.join(out_folder, name)
        if not os.path.exists(path):  # download() renames only a complete file to its final name
            download(f"{base_url}/{name}", path)
        num_tokens += check_fineweb_header(path)
    meta = {'vocab_size': GPT2_VOCAB_SIZE, 'tokenizer': 'gpt2', 'dtype': 'uint16',
            'header_bytes': FINEWEB_HEADER_BYTES, 'train': train_files, 'val': val_files}
    # last: a folder with meta.json holds every shard it lists, checked
    write_meta(out_folder, meta)
    print(f"{out_folder}: {num_train_shards} train shards + 1 val shard, "
          f"{num_tokens / 1e6:,.0f}M tokens")
    return meta


if __name__ == '__main__':
    parser = argparse.ArgumentParser(
        description='Download pretokenized FineWeb-10B shards (GPT-2 BPE).')
    parser.add_argument('--num_train_shards', type=int, default=8,
                        help='train shards of ~100M tokens (~200 MB) each, 1 to 103. '
                             'Default 8 = 0.8B tokens (1.6 GB), the amount modded-nanogpt\'s '
                             'quick start fetched for its GPT-2-small speedrun; '
                             '1 is enough to try things out')
    parser.add_argument('--base_url', default=DEFAULT_BASE_URL,
                        help='where the shards are (tests point it at a local server)')
    run_prepare(parser, prepare)
