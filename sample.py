"""
Sample from a model trained by train.py, optionally with its multipliers folded into plain weights.

    python sample.py --out_dir out --prompt "ROMEO:" --max_new_tokens 300
    python sample.py --out_dir out --fold  # the same logits from plain matrices: zero cost
Exports (a folded checkpoint, a Hugging Face Llama checkpoint) are export.py's.
"""
import sys
from dataclasses import dataclass

import torch

from data.common import get_tokenizer
from model import GPT, config_from_checkpoint, flag
from runtime import check_ranges, fail, load_checkpoint, parse_flags, pick_device


@dataclass
class SampleSettings:
    out_dir: str = flag('out', 'folder holding ckpt.pt (written by train.py)')
    ckpt: str = flag('', 'checkpoint path (default: out_dir/ckpt.pt)')
    prompt: str = flag('\n', 'text to continue (at least one character)')
    num_samples: int = flag(1, 'samples to draw', allowed='[0, inf)')
    max_new_tokens: int = flag(500, 'tokens per sample', allowed='[0, inf)')
    temperature: float = flag(0.8, 'softmax temperature (< 1: more conservative)',
                              allowed='(0, inf)')
    top_k: int = flag(200, 'sample among the k likeliest tokens only (0 = all)', allowed='[0, inf)')
    fold: bool = flag(False, 'fold the multipliers into the matrices (same logits, baseline size)')
    seed: int = flag(1337, 'random seed', allowed='[0, 4294967295]')
    device: str = flag('auto', 'where to run', ('auto', 'cpu', 'cuda', 'mps'))


def load_model(s, device):
    """The model of a checkpoint (in eval mode) and the checkpoint itself (it carries meta.json)."""
    path = s.ckpt or f'{s.out_dir}/ckpt.pt'
    ckpt = load_checkpoint(path, '--ckpt')
    try:  # a damaged checkpoint, or one of another model.py: one line
        model = GPT(config_from_checkpoint(ckpt['model_config'])).to(device)
        model.load_state_dict(ckpt['model'])
    except (TypeError, ValueError, RuntimeError) as err:
        fail(f"--ckpt: {path} does not fit this model.py ({type(err).__name__}: "
             f"{str(err).strip().splitlines()[0][:120]})")
    return model.eval(), ckpt


def print_sample(model, meta, tokens, device):
    """train.py's sample at the end of a run: `tokens` tokens after a newline."""
    try:
        tokenizer = get_tokenizer(meta)
    except Exception as err:  # e.g. tiktoken's GPT-2 files cannot be downloaded offline
        print(f'no sample: {err}')
        return
    start = torch.tensor([tokenizer.encode('\n')], device=device)
    ids = model.generate(start, tokens, top_k=200, vocab_size=tokenizer.vocab_size)[0].tolist()
    print('---- sample ----\n' + tokenizer.decode(ids))


def encode_prompt(prompt, tokenizer, vocab_size):
    """The prompt's token ids, or a one-line error (exit 2) for a prompt the model cannot continue:
    empty, a character outside a char vocabulary, text UTF-8 cannot hold (a lone surrogate from an
    undecodable argv byte), an id beyond the model's vocabulary. Any length: generate() crops the
    context to the last block_size tokens."""
    if not prompt:
        fail('--prompt is empty: give at least one character to continue')
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as err:  # UnicodeEncodeError included
        fail(f'--prompt: {err}')
    if max(ids) >= vocab_size:  # a tokenizer the model was not trained on
        fail(f"--prompt: token id {max(ids)} is beyond the model's vocabulary of {vocab_size}")
    return ids


def main(argv):
    s = SampleSettings(**parse_flags(argv, SampleSettings))
    check_ranges(s)
    device, _, _ = pick_device(s.device)
    torch.manual_seed(s.seed)
    model, ckpt = load_model(s, device)
    if s.fold:
        model = model.fold_multipliers()
    n_params = sum(p.numel() for p in model.parameters())
    folded = ' (multipliers folded)' if s.fold else ''
    print(f"{n_params:,} parameters{folded}, trained {ckpt['iter']} iters")
    try:
        tokenizer = get_tokenizer(ckpt['meta'])
    except RuntimeError as err:  # GPT-2's BPE files, not at hand offline
        fail(str(err))
    start = encode_prompt(s.prompt, tokenizer, model.config.vocab_size)
    idx = torch.tensor([start], dtype=torch.long, device=device)
    for _ in range(s.num_samples):
        out = model.generate(idx, s.max_new_tokens, s.temperature, s.top_k or None,
                             tokenizer.vocab_size)
        print(tokenizer.decode(out[0].tolist()) + '\n---------------')


if __name__ == '__main__':
    main(sys.argv[1:])
