"""
Export a model trained by train.py with its multipliers folded into plain weights (the same logits,
the baseline's parameter count): as a checkpoint sample.py loads, or as a Hugging Face Llama
checkpoint with its tokenizer (transformers loads it; llama.cpp converts GPT-2-tokenized ones).

    python export.py --out_dir out --pt out/folded.pt   # a nanoLRM checkpoint, multipliers in W
    python export.py --out_dir out --hf out/hf          # config.json, model.safetensors, tokenizer
    python sample.py --ckpt out/folded.pt               # sample from the folded checkpoint
"""
import json
import os
import sys
from dataclasses import dataclass

import torch

from data.common import GPT2_BPE_ENV, GPT2_PATTERN, gpt2_encoding
from model import flag
from runtime import check_writable_folder, fail, parse_flags, save_checkpoint
from sample import load_model


@dataclass
class ExportSettings:
    out_dir: str = flag('out', 'folder holding ckpt.pt (written by train.py)')
    ckpt: str = flag('', 'checkpoint path (default: out_dir/ckpt.pt)')
    pt: str = flag('', 'save the folded model at this path (a checkpoint sample.py loads)')
    hf: str = flag('', 'write the folded model and its tokenizer into this folder as a Hugging '
                       'Face Llama checkpoint (transformers >= 4.57)')


# -------------------------------------------------------------------------------------------------
# --hf: a folded model is a Llama model (pre-norm RMSNorm with eps 1e-6, rotary positions,
# separate Q/K/V/O, SiLU-gated MLP, no biases, untied embedding and head, scale 1/sqrt(head size)).
# Every GPTConfig field maps onto LlamaConfig or folds into the weights (dropout is training only),
# so every checkpoint can be exported. transformers is imported here only: an optional dependency.

# llama.cpp's converter (convert_hf_to_gguf.py) knows a BPE tokenizer by the ids it gives for a test
# text: GPT-2's is known, our char and byte tokenizers are not (experiments/export/README.md).
LLAMA_CPP_NOTE = {
    'char': "llama.cpp's converter refuses char tokenizers (WordLevel error: Missing [UNK] token)",
    'byte': "llama.cpp's converter refuses byte tokenizers (BPE pre-tokenizer was not recognized)",
}


# the oldest transformers the export was run with: 4.57.6, which llama.cpp's converter pins (5.25.0
# too); older ones lack LlamaConfig's head_dim and dtype
MIN_TRANSFORMERS = '4.57'


def check_hf_folder(folder):
    """Fail in one line, before any work and before anything is written, when --hf cannot write
    its folder or transformers is missing or older than MIN_TRANSFORMERS."""
    try:
        import transformers
        from packaging.version import Version  # a dependency of transformers
    except ImportError:
        fail('--hf needs transformers (pip install transformers)')
    if Version(transformers.__version__) < Version(MIN_TRANSFORMERS):
        fail(f'--hf needs transformers >= {MIN_TRANSFORMERS}, not {transformers.__version__} '
             f"(pip install 'transformers>={MIN_TRANSFORMERS}')")
    existing = os.path.abspath(folder)  # the folder, else the nearest folder above it that exists
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        fail(f'--hf {folder}: {existing} is a file, not a folder')
    if not os.access(existing, os.W_OK):
        fail(f'--hf {folder}: {existing} is not writable')


def llama_config(model, meta):
    """transformers' LlamaConfig of the same sizes as the (folded) model."""
    from transformers import LlamaConfig
    c = model.config
    eos = 50256 if meta['tokenizer'] == 'gpt2' else None  # GPT-2's <|endoftext|>; none in others
    llama = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.n_embd,
                        intermediate_size=model.blocks[0].mlp.up.weight.size(0),
                        num_hidden_layers=c.n_layer, num_attention_heads=c.n_head,
                        num_key_value_heads=c.n_head, head_dim=c.n_embd // c.n_head,
                        max_position_embeddings=c.block_size, rms_norm_eps=1e-6,  # model.RMSNorm's
                        rope_parameters=dict(rope_type='default', rope_theta=c.rope_base),
                        attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                        bos_token_id=eos, eos_token_id=eos,
                        dtype=str(model.head.weight.dtype).removeprefix('torch.'))
    llama.rope_theta = c.rope_base  # also at the top level, where transformers < 5 reads it
    return llama


def rope_to_llama(w, n_head):
    """W_Q or W_K with the second half of each head's rows negated. Our rotation turns each pair
    (x1, x2) by -theta, Llama's by +theta; with x2 negated they agree, and so do all q . k."""
    sign = w.new_tensor([1.0, -1.0]).view(2, 1, 1)  # x1 rows kept, x2 rows negated
    return (w.view(n_head, 2, -1, w.size(1)) * sign).view_as(w)


def llama_state_dict(model):
    """The folded model's weights under the names of transformers' LlamaForCausalLM."""
    n_head = model.config.n_head
    weights = {'model.embed_tokens.weight': model.embed.weight.t(),  # (n_embd, vocab) -> rows
               'model.norm.weight': model.norm_out.weight, 'lm_head.weight': model.head.weight}
    for i, block in enumerate(model.blocks):
        attn, mlp, layer = block.attn, block.mlp, f'model.layers.{i}'
        weights |= {
            f'{layer}.input_layernorm.weight': block.norm_attn.weight,
            f'{layer}.self_attn.q_proj.weight': rope_to_llama(attn.q.weight, n_head),
            f'{layer}.self_attn.k_proj.weight': rope_to_llama(attn.k.weight, n_head),
            f'{layer}.self_attn.v_proj.weight': attn.v.weight,
            f'{layer}.self_attn.o_proj.weight': attn.o.weight,
            f'{layer}.post_attention_layernorm.weight': block.norm_mlp.weight,
            f'{layer}.mlp.gate_proj.weight': mlp.gate.weight,
            f'{layer}.mlp.up_proj.weight': mlp.up.weight,
            f'{layer}.mlp.down_proj.weight': mlp.down.weight,
        }
    return {name: w.detach().contiguous() for name, w in weights.items()}


def hf_tokenizer(meta):
    """The dataset's tokenizer as a transformers tokenizer that gives nanoLRM's ids, built in memory
    with the tokenizers library alone (transformers' own converters differ between 4.x and 5.x).
    GPT-2's ranks come from where sample.py finds them; without them: one line, exit 2."""
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers,
                            processors)
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    if meta['tokenizer'] == 'char':  # each character a word of its own, its id its place in chars
        tokenizer = Tokenizer(models.WordLevel({c: i for i, c in enumerate(meta['chars'])}))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r'[\s\S]'), behavior='isolated')
        tokenizer.decoder = decoders.Fuse()  # joined without spaces
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    byte_to_char = bytes_to_unicode()  # byte-level BPE spells each byte as a printable character
    if meta['tokenizer'] == 'byte':  # id = byte value: a byte-level BPE of 256 bytes, no merges
        tokenizer = Tokenizer(models.BPE({byte_to_char[b]: b for b in range(256)}, merges=[]))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tokenizer.decoder = decoders.ByteLevel()
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    try:
        encoding = gpt2_encoding()  # the $NANOLRM_GPT2_BPE file, else tiktoken's (downloaded once)
    except OSError as err:
        fail(f"--hf: GPT-2's BPE ranks are not at hand ({err}): set ${GPT2_BPE_ENV} to a "
             'gpt2.tiktoken file, or run once online (tiktoken keeps them)')
    ranks = {encoding.decode_single_token_bytes(i): i for i in range(encoding.eot_token)}
    spell = lambda token: ''.join(byte_to_char[b] for b in token)
    # a token of 2+ bytes merges each split of it into two tokens, listed in the order of its rank
    # (as transformers' TikTokenConverter lists them)
    merges = sorted((rank, ranks[token[:i]], ranks[token[i:]], token[:i], token[i:])
                    for token, rank in ranks.items() for i in range(1, len(token))
                    if token[:i] in ranks and token[i:] in ranks)
    vocab = {spell(token): i for token, i in ranks.items()}
    # ignore_merges: a pre-split piece that is a token stays whole, as tiktoken looks it up
    tokenizer = Tokenizer(models.BPE(vocab, [(spell(a), spell(b)) for *_, a, b in merges],
                                     fuse_unk=False, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([  # GPT-2's pre-split, then bytes
        pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior='isolated'),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken('<|endoftext|>', normalized=False, special=True)])
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)  # offsets only
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token='<|endoftext|>',
                                   eos_token='<|endoftext|>')


def name_tokenizer_class(folder):
    """Name the saved tokenizer's class PreTrainedTokenizerFast, which transformers 4 and 5 both
    load. transformers 5 writes "TokenizersBackend", a class 4.x (as pinned by llama.cpp's
    converter, 4.57) does not have: its AutoTokenizer then fails."""
    path = os.path.join(folder, 'tokenizer_config.json')
    with open(path) as f:
        config = json.load(f)
    config['tokenizer_class'] = 'PreTrainedTokenizerFast'
    with open(path, 'w') as f:
        json.dump(config, f, indent=2)


def export_hf(model, meta, folder):
    """Write the folded model into folder as a Hugging Face Llama checkpoint: config.json,
    model.safetensors and its tokenizer. Both are built before anything is written, so that a
    refusal leaves no half-written folder."""
    from transformers import LlamaForCausalLM
    tokenizer = hf_tokenizer(meta)
    with torch.device('meta'):  # no memory and no random init for weights about to be replaced
        llama = LlamaForCausalLM(llama_config(model, meta))
    llama.load_state_dict(llama_state_dict(model), assign=True)  # strict: each weight, no other
    check_writable_folder(folder, '--hf')  # created now
    llama.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    name_tokenizer_class(folder)
    if meta['tokenizer'] in LLAMA_CPP_NOTE:
        print(f"--hf: for transformers only; {LLAMA_CPP_NOTE[meta['tokenizer']]}: "
              'it needs a GPT-2-tokenized model')


def main(argv):
    s = ExportSettings(**parse_flags(argv, ExportSettings))
    if not s.pt and not s.hf:
        fail('nothing to export: give --pt PATH (a folded checkpoint) or --hf DIR (Hugging Face)')
    if s.pt:
        check_writable_folder(os.path.dirname(os.path.abspath(s.pt)), '--pt')
        if os.path.isdir(s.pt):
            fail(f'--pt {s.pt} is a folder, not a file')
    if s.hf:
        check_hf_folder(s.hf)
    model, ckpt = load_model(s, 'cpu')
    model = model.fold_multipliers()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params:,} parameters (multipliers folded), trained {ckpt['iter']} iters")
    if s.hf:  # first: where it refuses (GPT-2's ranks not at hand), nothing is written
        export_hf(model, ckpt['meta'], s.hf)
        print(f'saved {s.hf} (Hugging Face Llama checkpoint)')
    if s.pt:
        save_checkpoint(s.pt, model, ckpt['settings'], ckpt['meta'], ckpt['iter'])
        print(f'saved {s.pt}')


if __name__ == '__main__':
    main(sys.argv[1:])
