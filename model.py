"""
nanoLRM model: a small GPT whose matrix layers can carry learnable multipliers.

Paper: Velikanov et al., "Learnable Multipliers: Freeing the Scale of Language Model Matrix Layers"
(arXiv 2601.04890). The idea in four lines:
  1. Weight decay + gradient noise hold every matrix at an equilibrium norm ||W|| ~ sqrt(lr / wd):
     the scale of a matrix layer is set by the optimizer's hyperparameters, not by the data.
  2. So give the scale to parameters that can learn it: W_ij = s * r_i * W~_ij * c_j, with one
     scalar s, one row multiplier r_i per output and one column multiplier c_j per input.
  3. W~ stays weight-decayed; the multipliers average their gradient over a whole row/column,
     so their signal beats the noise, and they get only a small weight decay (2e-3).
  4. For inference the multipliers fold into W once (GPT.fold_multipliers): zero cost.
The file reads in that order: MLinear (the formula), where multipliers go (PLACEMENTS) and how
they are parametrized (PARAMETRIZATIONS), the settings (GPTConfig), the GPT, what is logged of it,
and last the speed paths (the same results, faster).
The architecture: pre-norm decoder, RMSNorm gains, rotary positions, causal attention with separate
Q, K, V, O matrices, gated MLP, no biases, untied token embedding and LM head.
"""
import contextlib
import math
from dataclasses import dataclass, field, fields, replace

import torch
import torch.nn as nn
from torch.nn import functional as F


class MLinear(nn.Module):
    """A matrix layer y = W x with W = s * r[:, None] * W~ * c[None, :]; each multiplier optional.

    A fixed multiplier s0 (muP-style) is the initial value of a learnable s, else a constant factor.
    Row and column multipliers start at 1, so at init the layer computes exactly s0 * W~ x.
    """

    def __init__(self, d_in, d_out, kinds=(), fixed_mult=1.0, std=0.02, param='plain'):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in) * std)  # W~, weight-decayed
        to_param = PARAMETRIZATIONS[param][0]  # the parameter that holds a multiplier's value
        self.scalar_mult = nn.Parameter(to_param(torch.tensor(float(fixed_mult)))) \
            if 'scalar' in kinds else None
        self.row_mult = nn.Parameter(to_param(torch.ones(d_out))) if 'row' in kinds else None
        self.col_mult = nn.Parameter(to_param(torch.ones(d_in))) if 'col' in kinds else None
        self.fixed_mult, self.param = float(fixed_mult), param
        self.built_weight = None  # W built once for several passes (weights_built_once, below)

    def forward(self, x):
        w = self.effective_weight() if self.built_weight is None else self.built_weight
        return F.linear(x, w)  # y = W x

    def effective_weight(self, w=None, c=None):
        """W_ij = s * r_i * W~_ij * c_j (paper Sec. 2), built on the weight side: O(d_in d_out)
        work, whatever the number of tokens. w, c: some columns of W~ and their c (the
        embedding's speed path, embedding_columns); by default all of W~ and c."""
        if w is None:
            w, c = self.weight, self.multiplier('col')
        s, r = self.multiplier('scalar'), self.multiplier('row')
        # autograd gives the paper's gradients, G = dL/dW (checked by the test
        # test_autograd_gradients_equal_the_papers_formulas):
        #   dL/dW~_ij = s r_i c_j G_ij           dL/dr_i = sum_j s W~_ij c_j G_ij
        #   dL/dc_j   = sum_i s r_i W~_ij G_ij   dL/ds   = sum_ij r_i W~_ij c_j G_ij
        if c is not None:
            w = w * c  # W~_ij c_j
        if s is None and r is None and self.fixed_mult == 1.0:
            return w
        s = self.fixed_mult if s is None else s  # a fixed s0 where s is not learned
        return (s if r is None else s * r[:, None]) * w  # s r_i W~_ij c_j

    def multiplier(self, kind):
        """The value of multiplier `kind` ('scalar', 'row' or 'col'); None where there is none."""
        param = getattr(self, f'{kind}_mult')
        return None if param is None else PARAMETRIZATIONS[self.param][1](param)

    def multipliers(self):
        """The multipliers' parameters by name ('scalar_mult', 'row_mult', 'col_mult')."""
        names = ('scalar_mult', 'row_mult', 'col_mult')
        return {n: p for n in names if (p := getattr(self, n)) is not None}


# -------------------------------------------------------------------------------------------------
# where the multipliers go, and how their parameters hold them

KINDS = ('scalar', 'row', 'col')  # the multiplier kinds: s, r_i, c_j
MATRICES = ('embed', 'q', 'k', 'v', 'o', 'gate', 'up', 'down', 'head')  # each MLinear's name
ROLES = MATRICES + ('gains', 'multipliers')  # the parameters' roles: each trained its own way
# Which multiplier kinds each matrix may carry (paper Sec. 2 and App. C), by the matrix's name; a
# matrix not named gets none. A matrix gets the kinds that are both switched on by a flag and
# allowed here. A new placement for an ablation is one more line.
PLACEMENTS = {
    # every matrix, the embedding included; the LM head at most a scalar (HEAD_ABLATIONS). With
    # --row_mult --col_mult alone (head unchanged) this is the paper's main runs (App. C.1);
    # --scalar_mult adds a scalar to every matrix, the head's too.
    'all': dict(embed=KINDS, q=KINDS, k=KINDS, v=KINDS, o=KINDS,
                gate=KINDS, up=KINDS, down=KINDS, head=('scalar',)),
    # the paper's MLP sweep (Sec. 3, App. B): multipliers on W_gate, W_up and W_down only
    'mlp': dict(gate=KINDS, up=KINDS, down=KINDS),
    # paper App. C: no two multipliers whose product is all that matters (Q-row vs K-row, V vs O,
    # up vs down). The LM head is left unchanged (App. C.1): a head scalar times the final norm
    # gain is such a product.
    'symmetry_free': dict(embed=KINDS, q=('scalar', 'row'), o=KINDS, gate=('scalar', 'row'),
                          down=KINDS),
    # ablations of `all`: row multipliers on the LM head too (Sec. 4.4 says they hurt), and no
    # multipliers on the token embedding (App. C.1)
    'head_rows': dict(embed=KINDS, q=KINDS, k=KINDS, v=KINDS, o=KINDS,
                      gate=KINDS, up=KINDS, down=KINDS, head=('scalar', 'row')),
    'no_embed': dict(q=KINDS, k=KINDS, v=KINDS, o=KINDS, gate=KINDS, up=KINDS, down=KINDS,
                     head=('scalar',)),
}
# The LM head takes at most a scalar: row multipliers fit token frequencies "lazily" and hurt
# (Sec. 4.4), and its column scale is the final norm gain (App. C.1). A placement that gives the
# head more is an ablation of that rule, and says so by its name here.
HEAD_ABLATIONS = ('head_rows',)
for _name, _placement in PLACEMENTS.items():  # a misspelled matrix or kind fails at import
    for _matrix, _kinds in _placement.items():
        if _matrix not in MATRICES or not set(_kinds) <= set(KINDS):
            raise ValueError(f'PLACEMENTS[{_name!r}]: {_matrix}={_kinds}: matrices are '
                             f'{", ".join(MATRICES)}; kinds are {", ".join(KINDS)}')
    if set(_placement.get('head', ())) - {'scalar'} and _name not in HEAD_ABLATIONS:
        raise ValueError(f"PLACEMENTS[{_name!r}]: head={_placement['head']}: the LM head takes at "
                         'most a scalar (paper Sec. 4.4, App. C.1); name the placement in '
                         'HEAD_ABLATIONS to study more')

# How a multiplier's parameter p holds its value m: (m -> p at init, p -> m in the forward pass),
# chosen by --mult_param. AdamW steps p (--mult_lr) and decays p towards 0 (--mult_wd), and the
# logged mult_grad_norm is p's gradient. A new one, e.g. softplus, is one more line.
PARAMETRIZATIONS = {
    'plain': (lambda m: m, lambda p: p),  # m = p: --mult_lr steps m, --mult_wd pulls m to 0
    'log': (torch.log, torch.exp),  # m = exp(p), rule 3's ablation: steps log m, pulls m to 1
}


# -------------------------------------------------------------------------------------------------
# the settings of the model: every field is a --flag of train.py


def flag(default, help, choices=None, allowed=None, folds=False):
    """A dataclass field with a one-line help string; every such field becomes a --flag.

    choices: the allowed values. allowed: the allowed range of a number, written as in maths:
    '[0, 1)', '(0, inf)' (checked by check_ranges). folds: a multiplier setting that
    GPT.fold_multipliers() merges into the weights, so the folded model resets it to this default.
    """
    metadata = {'help': help, 'choices': choices, 'allowed': allowed, 'folds': folds}
    return field(default=default, metadata=metadata)


@dataclass
class GPTConfig:
    vocab_size: int = flag(0, "vocabulary size; 0 = the dataset's "
                              "(a larger value pads it, e.g. 50304)", allowed='[0, 65536]')
    block_size: int = flag(256, 'context length in tokens', allowed='[1, inf)')
    n_layer: int = flag(6, 'transformer blocks', allowed='[1, inf)')
    n_head: int = flag(6, 'attention heads', allowed='[1, inf)')
    n_embd: int = flag(384, 'model width', allowed='[1, inf)')
    mlp_hidden: int = flag(0, 'gated-MLP width; 0 = 8/3 * n_embd rounded up to a multiple of 64',
                           allowed='[0, inf)')
    dropout: float = flag(0.0, 'dropout on embeddings, attention and residual branches',
                          allowed='[0, 1)')
    rope_base: float = flag(10000.0, 'rotary position embedding base', allowed='(1, inf)')
    # learnable multipliers (paper section 2): each flag switches one kind on, where PLACEMENTS
    # allows it. folds=True: GPT.fold_multipliers() merges the field into the weights and resets it
    # to its default.
    scalar_mult: bool = flag(False, 'learnable scalar multiplier s per matrix', folds=True)
    row_mult: bool = flag(False, 'learnable row multipliers r (one per output) per matrix',
                          folds=True)
    col_mult: bool = flag(False, 'learnable column multipliers c (one per input) per matrix',
                          folds=True)
    mult_placement: str = flag('all', 'which matrices get multipliers (see PLACEMENTS)',
                               tuple(PLACEMENTS))
    mult_param: str = flag('plain', "how each multiplier's parameter holds it: m, or log m "
                                    '(breaks paper rule 3, the ablation; see PARAMETRIZATIONS)',
                           tuple(PARAMETRIZATIONS), folds=True)
    # the final RMSNorm gain is the LM head's column scale (paper Sec. 3, the projector sweep)
    final_gain: str = flag('vector', 'the final RMSNorm gain: a learnable vector, one learnable '
                                     'scalar, or fixed to 1', ('vector', 'scalar', 'fixed'),
                           folds=True)
    # fixed forward multipliers, the muP-style baseline (paper sec. 5); a learnable s starts there
    embed_mult: float = flag(1.0, 'fixed multiplier on the token embedding output',
                             allowed='(0, inf)', folds=True)
    logit_mult: float = flag(1.0, 'fixed multiplier on the LM-head logits',
                             allowed='(0, inf)', folds=True)
    attn_logit_mult: float = flag(1.0, 'fixed multiplier on attention logits, on top of '
                                       '1/sqrt(head size)', allowed='(0, inf)', folds=True)
    attn_out_mult: float = flag(1.0, 'fixed multiplier on the attention branch output',
                                allowed='(0, inf)', folds=True)
    mlp_out_mult: float = flag(1.0, 'fixed multiplier on the MLP branch output',
                               allowed='(0, inf)', folds=True)


def config_from_checkpoint(saved):
    """A checkpoint's model_config as a GPTConfig (one saved before --mult_param held log_mult)."""
    saved = dict(saved)
    if 'log_mult' in saved:
        saved['mult_param'] = 'log' if saved.pop('log_mult') else 'plain'
    return GPTConfig(**saved)


# -------------------------------------------------------------------------------------------------
# the model: every matrix layer an MLinear

# The fixed (muP-style) multiplier of each matrix that has one, by the GPTConfig field holding it.
# Attention logits are linear in W_Q, so their multiplier sits on Q (RoPE is linear too).
FIXED_MULTS = dict(embed='embed_mult', q='attn_logit_mult', o='attn_out_mult', down='mlp_out_mult',
                   head='logit_mult')


def matrix_layer(name, d_in, d_out, config):
    """Every matrix layer of the GPT is built here, by its name in MATRICES: the one place for a
    layer-wide option. It carries the multiplier kinds that are both switched on by a flag and
    placed on it by PLACEMENTS, and starts its scalar at its fixed multiplier (FIXED_MULTS)."""
    switched_on = [kind for kind in KINDS if getattr(config, f'{kind}_mult')]
    placed = PLACEMENTS[config.mult_placement].get(name, ())
    kinds = tuple(kind for kind in placed if kind in switched_on)
    fixed_mult = getattr(config, FIXED_MULTS[name]) if name in FIXED_MULTS else 1.0
    # the residual branches' output matrices start smaller, as in GPT-2: std / sqrt(2 n_layer)
    std = 0.02 / math.sqrt(2 * config.n_layer) if name in ('o', 'down') else 0.02
    return MLinear(d_in, d_out, kinds, fixed_mult, std, config.mult_param)


class RMSNorm(nn.Module):
    """x / rms(x) * g: the gain g (no weight decay) acts as the next matrix's column multipliers.
    gain: 'vector' (one g per dimension, the usual), 'scalar' (one g for all) or 'fixed' (g = 1)."""

    def __init__(self, dim, gain='vector'):
        super().__init__()
        shape = {'vector': (dim,), 'scalar': (1,), 'fixed': None}[gain]
        self.weight = None if shape is None else nn.Parameter(torch.ones(shape))

    def forward(self, x):
        gain = None if self.weight is None else self.weight.expand(x.size(-1))
        return F.rms_norm(x, (x.size(-1),), gain, eps=1e-6)


def rotary_tables(block_size, head_size, base):
    """[cos, cos] and [sin, -sin] of each position's angles, (T, head_size) each."""
    inv_freq = base ** (-torch.arange(0, head_size, 2).float() / head_size)
    angles = torch.outer(torch.arange(block_size).float(), inv_freq)  # (T, head_size/2)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), dim=-1), torch.cat((sin, -sin), dim=-1)


def apply_rotary(x, cos, sin):
    # rotate pairs (x1, x2) of a head by the position's angle: (x1 cos + x2 sin, x2 cos - x1 sin),
    # as [x1, x2] * [cos, cos] + [x2, x1] * [sin, -sin]: three whole-tensor ops, no split
    x2_x1 = x.roll(x.size(-1) // 2, dims=-1)
    return (x * cos + x2_x1 * sin).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.n_embd
        self.n_head, self.dropout = config.n_head, config.dropout
        self.q, self.k = matrix_layer('q', d, d, config), matrix_layer('k', d, d, config)
        self.v, self.o = matrix_layer('v', d, d, config), matrix_layer('o', d, d, config)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin):
        B, T, C = x.size()  # batch, sequence length, width (n_embd)
        hs = C // self.n_head  # head size
        heads = [m(x).view(B, T, self.n_head, hs).transpose(1, 2) for m in (self.q, self.k, self.v)]
        q, k, v = heads  # each (B, nh, T, hs)
        q = apply_rotary(q, cos[:T], sin[:T])
        k = apply_rotary(k, cos[:T], sin[:T])
        dropout = self.dropout if self.training else 0.0
        # causal attention within each head: (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again: (B, T, C)
        return self.resid_dropout(self.o(y))


class GatedActivation(nn.Module):
    """SiLU(gate) * up: the MLP's hidden activation, a module of its own so that it is logged."""

    def forward(self, gate, up):
        return F.silu(gate) * up


class MLP(nn.Module):
    """Gated MLP: W_down (SiLU(W_gate x) * W_up x)."""

    def __init__(self, config):
        super().__init__()
        d, hidden = config.n_embd, config.mlp_hidden or 64 * math.ceil(8 * config.n_embd / 3 / 64)
        self.gate = matrix_layer('gate', d, hidden, config)
        self.up = matrix_layer('up', d, hidden, config)
        self.act = GatedActivation()
        self.down = matrix_layer('down', hidden, d, config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.down(self.act(self.gate(x), self.up(x))))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm_attn, self.attn = RMSNorm(config.n_embd), CausalSelfAttention(config)
        self.norm_mlp, self.mlp = RMSNorm(config.n_embd), MLP(config)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.norm_attn(x), cos, sin)
        return x + self.mlp(self.norm_mlp(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.vocab_size > 0 and config.n_embd % config.n_head == 0
        assert config.mult_placement in PLACEMENTS
        self.config = config
        # the token embedding is the linear map W @ one_hot(token), W of shape (n_embd, vocab):
        # its row multipliers scale embedding dimensions, its column multipliers scale tokens
        self.embed = matrix_layer('embed', config.vocab_size, config.n_embd, config)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_out = RMSNorm(config.n_embd, config.final_gain)
        self.head = matrix_layer('head', config.n_embd, config.vocab_size, config)
        head_size = config.n_embd // config.n_head
        cos, sin = rotary_tables(config.block_size, head_size, config.rope_base)
        self.register_buffer('rope_cos', cos, persistent=False)
        self.register_buffer('rope_sin', sin, persistent=False)

    def forward(self, idx, targets=None):
        assert idx.size(1) <= self.config.block_size, \
            f'sequence of {idx.size(1)} > block_size {self.config.block_size}'
        x = self.drop(embedding_columns(self.embed, idx))  # W_embed @ one_hot: (B, T, n_embd)
        for block in self.blocks:
            x = block(x, self.rope_cos, self.rope_sin)
        x = self.norm_out(x)
        if targets is None:  # inference: only the last position's logits are needed
            return self.head(x[:, [-1], :]).float(), None
        logits = self.head(x).float()
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def matrix_layers(self):
        """Every MLinear by name: 'embed', 'blocks.0.attn.q', ..., 'head'."""
        return {n: m for n, m in self.named_modules() if isinstance(m, MLinear)}

    def params_by_role(self):
        """Every parameter by role, which train.py gives its LR and weight decay: each matrix W~ by
        its name (MATRICES: 'embed', 'q', ..., 'head'), then 'gains' and 'multipliers'."""
        roles = {role: [] for role in ROLES}
        for name, m in self.matrix_layers().items():
            roles[name.split('.')[-1]].append(m.weight)
            roles['multipliers'] += m.multipliers().values()
        roles['gains'] = [m.weight for m in self.modules()
                          if isinstance(m, RMSNorm) and m.weight is not None]
        return roles

    def flops_per_token(self):
        """Training FLOPs per token, for MFU (the PaLM paper's count): 6 per weight of each matrix
        product (2 forward, 4 backward; the embedding is a lookup) + 12 L C T for attention."""
        c = self.config
        weights = sum(m.weight.numel() for n, m in self.matrix_layers().items() if n != 'embed')
        return 6 * weights + 12 * c.n_layer * c.n_embd * c.block_size

    @torch.no_grad()
    def observables(self):
        """What the paper plots of the weights, {name: float}: the RMS of each W~ (and of W where
        it has multipliers), each multiplier's mean/min/max, the Q/K symmetry drift, the final
        gain. (The activations' are in ACTIVATIONS, below.)"""
        stats = {}
        for name, m in self.matrix_layers().items():
            stats[f'{name}.weight_rms'] = rms(m.weight)  # ||W~|| ~ sqrt(lr/wd)
            if m.multipliers():  # the RMS of W = s r W~ c: the scale the multipliers learned
                stats[f'{name}.effective_rms'] = rms(m.effective_weight())
            for kind in KINDS:
                value = m.multiplier(kind)
                for f in ('mean', 'min', 'max') if value is not None else ():
                    stats[f'{name}.{kind}_mult_{f}'] = getattr(value.float(), f)().item()
        for i, block in enumerate(self.blocks):
            stats |= qk_drift(block.attn, f'blocks.{i}.attn')
        if self.norm_out.weight is not None:
            stats['norm_out.gain_mean'] = self.norm_out.weight.float().mean().item()
        return stats

    @torch.no_grad()
    def activation_rms(self, idx):
        """{name: RMS} of each activation in ACTIVATIONS, on ids idx (a forward pass in eval mode
        with targets, so the logits of every position): the scales the paper watches (Figs. 1, 4
        and 8)."""
        stats, hooks, training = {}, [], self.training

        def record(name, where):
            def hook(module, inputs, output):
                x = inputs[0] if where == 'input' else output
                stats[name] = rms(x)
            return hook

        for name, module, where in ACTIVATIONS:
            for i in range(self.config.n_layer) if '{i}' in name else [None]:
                target = self.get_submodule(module.format(i=i))
                hooks.append(target.register_forward_hook(record(name.format(i=i), where)))
        try:
            self.eval()
            self(idx, idx)
        finally:
            self.train(training)
            for hook in hooks:
                hook.remove()
        return stats

    @torch.no_grad()
    def fold_multipliers(self):
        """The same function as a baseline GPT: no multipliers, fixed multipliers 1,
        W = s r W~ c folded in."""
        # no multipliers at all
        plain = {f.name: f.default for f in fields(GPTConfig) if f.metadata['folds']}
        folded = GPT(replace(self.config, **plain)).to(self.embed.weight.device)
        folded_layers = folded.matrix_layers()
        for name, m in self.matrix_layers().items():
            folded_layers[name].weight.copy_(m.effective_weight())
        for name, m in self.named_modules():  # norm gains carry over (a scalar one as a vector)
            if isinstance(m, RMSNorm):
                gain = torch.ones(()) if m.weight is None else m.weight
                folded.get_submodule(name).weight.copy_(gain)
        return folded

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, vocab_size=None):
        """Continue idx by sampling; vocab_size: only ids below it (the tokenizer's, when
        --vocab_size padded the model's vocabulary with ids no data holds)."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size:])
            logits = logits[:, -1, :vocab_size] / max(temperature, 1e-6)
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits[logits < kth] = -float('inf')
            next_id = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, next_id), dim=1)
        return idx


# -------------------------------------------------------------------------------------------------
# what is logged of the model (GPT.observables, GPT.activation_rms)

# The activations logged at every evaluation, as their RMS on the first evaluation batch:
# (name in log.jsonl, the module, its 'input' or 'output'); {i} stands for every block.
# A new logged activation is one more line.
ACTIVATIONS = [
    ('blocks.{i}.output_rms', 'blocks.{i}', 'output'),  # the residual stream
    ('blocks.{i}.attn.output_rms', 'blocks.{i}.attn', 'output'),  # the attention branch (Fig. 4b)
    ('blocks.{i}.mlp.output_rms', 'blocks.{i}.mlp', 'output'),  # the MLP branch (Figs. 4b, 8)
    ('blocks.{i}.mlp.hidden_rms', 'blocks.{i}.mlp.act', 'output'),  # SiLU(W_gate x) * W_up x
    ('logits_rms', 'head', 'output'),
]


def rms(x):
    return x.float().pow(2).mean().sqrt().item()


def out_scale(layer):
    """s r_i of each output row (or s alone) where the layer learns s or r; else None."""
    s, r = layer.multiplier('scalar'), layer.multiplier('row')
    if s is None and r is None:
        return None
    s = layer.fixed_mult if s is None else s
    return s if r is None else s * r[:, None]


def qk_drift(attn, prefix):
    """The symmetry drift of a layer's Q and K scales (paper Sec. 4.1, Fig. 4a). Only the product
    (s r)_Q,i (s r)_K,i of row i's scales reaches the logits, so their ratio is free to drift.
    Per layer: the ratio's min and max, and the median and interquartile range over the rows of
    log10 |ratio| and log10 |product| (robust to the few dead rows that dominate min and max)."""
    q_scale, k_scale = out_scale(attn.q), out_scale(attn.k)
    if q_scale is None or k_scale is None:
        return {}
    q_scale, k_scale = q_scale.float().flatten(), k_scale.float().flatten()
    ratio = (q_scale / k_scale).abs()
    stats = {f'{prefix}.qk_ratio_min': ratio.min().item(),
             f'{prefix}.qk_ratio_max': ratio.max().item()}
    for name, x in (('ratio', ratio), ('product', (q_scale * k_scale).abs())):
        q1, median, q3 = torch.quantile(x.log10(), x.new_tensor([0.25, 0.5, 0.75])).tolist()
        stats[f'{prefix}.qk_log_{name}_median'] = median
        stats[f'{prefix}.qk_log_{name}_iqr'] = q3 - q1
    return stats


# -------------------------------------------------------------------------------------------------
# speed only: the same results as MLinear.forward, with less work


def embedding_columns(layer, idx):
    """The token embedding's lookup, W @ one_hot(j): the columns idx of W, as rows (..., d_out).
    With fewer tokens than columns (d_in = vocabulary size) only the tokens' columns of W are
    built, not all of W: O(tokens * d_out) work."""
    if layer.built_weight is not None or idx.numel() >= layer.weight.size(1):
        w = layer.effective_weight() if layer.built_weight is None else layer.built_weight
        return F.embedding(idx, w.t())
    w = F.embedding(idx, layer.weight.t()).unsqueeze(-1)  # W~[:, j] of each id j: (..., d_out, 1)
    c = layer.multiplier('col')
    c = None if c is None else c[idx, None, None]  # (..., 1, 1)
    return layer.effective_weight(w, c).squeeze(-1)


@contextlib.contextmanager
def weights_built_once(model):
    """Inside: every forward pass uses each W = s r W~ c as built once, on entry. On exit, the
    gradient G of each W, summed over all the backward passes inside, flows back through the
    build in one pass. With gradient accumulation: one build per optimizer step, not one per
    micro-batch, and the same gradients (the multipliers' are sums over G: paper sec. 2)."""
    built = {m: m.effective_weight() for m in model.matrix_layers().values()}
    built = {m: w for m, w in built.items() if w is not m.weight}  # plain layers use W~ as W
    for m, w in built.items():
        m.built_weight = w.detach().requires_grad_()  # a leaf: backward stops here, with G
    try:
        yield
        grads = {m: m.built_weight.grad for m in built}  # G, summed over the passes
    finally:
        for m in built:
            m.built_weight = None
    used = [m for m in built if grads[m] is not None]
    if used:  # dL/dW~ = s r c G,  dL/dr_i = sum_j s W~_ij c_j G_ij,  dL/dc_j = ..., dL/ds = ...
        torch.autograd.backward([built[m] for m in used], [grads[m] for m in used])
