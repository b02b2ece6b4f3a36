"""
llama.cpp (a GGUF that convert_hf_to_gguf.py made from export.py --hf) against transformers (the
export itself) and sample.py --fold (the nanoLRM checkpoint): the tokenizer's ids on the whole text,
greedy tokens within block_size (from 'ROMEO:' and from 8 windows of the text: a tiny model's greedy
text soon loops, other prompts give other tokens), logits on one block of the text, and where
greedy decoding parts beyond block_size. Prints one JSON line. run.py runs it in the venv that holds
llama-cpp-python.

Greedy = the likeliest id among the tokenizer's own (sample.py's --top_k 1 over the ids below
tokenizer.vocab_size); the model's vocabulary may be padded past them.
"""
import argparse
import contextlib
import io
import json
import os
import sys

import numpy as np
import torch
from llama_cpp import GGML_TYPE_F16, GGML_TYPE_F32, Llama
from transformers import LlamaForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
import sample  # noqa: E402
from data.common import get_tokenizer, read_text  # noqa: E402

PROMPT = 'ROMEO:\n'
GREEDY_TOKENS = 40  # the prompt and these stay within block_size (64)
WINDOWS, WINDOW_TOKENS = 8, 16  # prompts cut from the text; each continued up to block_size
LONG_TOKENS = 120  # past block_size: sample.py crops its window, llama.cpp extends positions
KV_SETTINGS = {  # llama.cpp's default KV cache (F16) with flash attention, and full precision
    'f16_kv_flash_attn': dict(type_k=GGML_TYPE_F16, type_v=GGML_TYPE_F16, flash_attn=True),
    'f32_kv_no_flash_attn': dict(type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, flash_attn=False),
}


def open_llama_cpp(gguf, **kv):
    return Llama(gguf, n_ctx=256, n_batch=256, logits_all=True, n_threads=2, verbose=False, **kv)


def llama_cpp_greedy(llm, prompt_ids, n, vocab):
    llm.reset()
    llm.eval(prompt_ids)
    ids = list(prompt_ids)
    for _ in range(n):
        ids.append(int(np.argmax(llm.scores[llm.n_tokens - 1, :vocab])))
        llm.eval(ids[-1:])
    return ids


@torch.no_grad()
def transformers_greedy(llama, prompt_ids, n, vocab):
    ids = torch.tensor([prompt_ids])
    for _ in range(n):
        next_id = llama(ids).logits[0, -1, :vocab].argmax()
        ids = torch.cat((ids, next_id.view(1, 1)), dim=1)
    return ids[0].tolist()


def sample_py_text(out_dir, n):
    """What `python sample.py --fold --top_k 1` writes after the prompt."""
    argv = ['--out_dir', out_dir, '--fold', '--top_k', '1', '--prompt', PROMPT, '--max_new_tokens',
            str(n), '--device', 'cpu']
    with contextlib.redirect_stdout(io.StringIO()) as out:
        sample.main(argv)
    return out.getvalue().split(PROMPT, 1)[1].rsplit('\n---------------', 1)[0]


def max_abs(arrays):
    return float(max(np.abs(a).max() for a in arrays))


def first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def main():
    parser = argparse.ArgumentParser()
    for flag in ('--out_dir', '--hf', '--gguf', '--text'):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, ckpt = sample.load_model(argparse.Namespace(out_dir=args.out_dir, ckpt=''), 'cpu')
    model = model.fold_multipliers()
    tokenizer = get_tokenizer(ckpt['meta'])
    vocab, block_size = tokenizer.vocab_size, model.config.block_size
    llama = LlamaForCausalLM.from_pretrained(args.hf).eval()
    text = read_text(args.text)
    ids = tokenizer.encode(text)
    prompt_ids = tokenizer.encode(PROMPT)
    llm = open_llama_cpp(args.gguf, **KV_SETTINGS['f32_kv_no_flash_attn'])
    result = dict(
        text_tokens=len(ids),
        tokenizer_ids_equal=llm.tokenize(text.encode(), add_bos=False) == ids,
        bos_eos=[llm.token_bos(), llm.token_eos()],
        adds_bos=llm.tokenize(b'a', add_bos=True) != llm.tokenize(b'a', add_bos=False),
    )
    # greedy tokens within block_size: llama.cpp, transformers, the checkpoint, sample.py's text
    starts = range(0, len(ids) - WINDOW_TOKENS, len(ids) // WINDOWS)
    prompts = [(prompt_ids, GREEDY_TOKENS)] + [
        (ids[i:i + WINDOW_TOKENS], block_size - WINDOW_TOKENS) for i in starts]
    equal, generated = [], []
    for prompt, n in prompts:
        ours = model.generate(torch.tensor([prompt]), n, top_k=1, vocab_size=vocab)[0].tolist()
        greedy = llama_cpp_greedy(llm, prompt, n, vocab)
        equal.append(greedy == transformers_greedy(llama, prompt, n, vocab) == ours)
        generated += greedy[len(prompt):]
    result['greedy'] = (f'{len(prompt_ids)} prompt + {GREEDY_TOKENS} tokens, and {len(starts)} '
                        f'text windows of {WINDOW_TOKENS} + {block_size - WINDOW_TOKENS}')
    result['greedy_equal_transformers_sample_py'] = f'{sum(equal)} of {len(equal)} runs'
    result['greedy_tokens_distinct_of_all'] = f'{len(set(generated))} of {len(generated)}'
    greedy = llama_cpp_greedy(llm, prompt_ids, GREEDY_TOKENS, vocab)
    llama_cpp_text = llm.detokenize(greedy[len(prompt_ids):]).decode('utf-8', errors='replace')
    result['text_equal_sample_py_fold_top_k_1'] = llama_cpp_text == sample_py_text(
        args.out_dir, GREEDY_TOKENS)
    # logits on blocks of the text (one at each window's start), and their argmax at every position
    blocks = [ids[i:i + block_size] for i in starts]
    with torch.no_grad():
        ours = [model(torch.tensor([b]), torch.tensor([b]))[0][0].numpy() for b in blocks]
        theirs = [llama(torch.tensor([b])).logits[0].numpy() for b in blocks]
    result['logits'] = f'{len(blocks)} blocks of {block_size} tokens'
    result['max_abs_logit'] = max_abs(ours)
    result['transformers_max_diff'] = max_abs([a - b for a, b in zip(theirs, ours)])
    for name, kv in KV_SETTINGS.items():
        llm_kv = open_llama_cpp(args.gguf, **kv)
        diffs, same_argmax = [], 0
        for block, our_logits in zip(blocks, ours):
            llm_kv.reset()
            llm_kv.eval(block)
            logits = llm_kv.scores[:len(block)]
            diffs.append(logits - our_logits)
            same_argmax += (logits[:, :vocab].argmax(1) == our_logits[:, :vocab].argmax(1)).sum()
        result[f'llama_cpp_max_diff_{name}'] = max_abs(diffs)
        result[f'llama_cpp_same_argmax_{name}'] = f'{same_argmax} of {len(blocks) * block_size}'
        del llm_kv
    result['distinct_argmax_of_all'] = len(set(np.concatenate(
        [o[:, :vocab].argmax(1) for o in ours]).tolist()))
    # past block_size, sample.py sees the last block_size tokens, llama.cpp all of them
    prompt = ids[:WINDOW_TOKENS]
    ours = model.generate(torch.tensor([prompt]), LONG_TOKENS, top_k=1, vocab_size=vocab)
    greedy = llama_cpp_greedy(llm, prompt, LONG_TOKENS, vocab)
    result['long_run'] = f'{WINDOW_TOKENS} prompt + {LONG_TOKENS} tokens, block_size {block_size}'
    result['long_run_first_difference_at_token'] = first_difference(ours[0].tolist(), greedy)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
