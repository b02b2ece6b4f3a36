"""
Muon for the hidden matrices and AdamW for everything else, in one optimizer: MuonAdamW.

Muon (Keller Jordan, 2024; https://kellerjordan.github.io/posts/muon/) moves a matrix W, given its
gradient G, in three steps:
  1. momentum        B <- beta B + (1 - beta) G;  U = (1 - beta) G + beta B (Nesterov), or U = B
  2. orthogonalize   U = P S Q^T  ->  O ~ P Q^T, by five Newton-Schulz iterations (no SVD)
  3. step            W <- W (1 - lr wd) - lr * scale(rows, cols) * O   (decoupled weight decay)
Step 2 gives every direction of the update about the same size. That suits a matrix that maps a
hidden state to another (Q, K, V, O, gate, up, down); the embedding, the LM head, the norm gains and
every learnable multiplier (scalars and vectors) are trained by AdamW.

muon_update() is steps 1 and 2; MuonAdamW.step calls it on each bucket of same-shape matrices,
stacked into one batch, and takes step 3. Under torchrun each rank orthogonalizes only its share of
a bucket and gathers the rest (orthogonalize_sharded); the gradients must already be averaged.
"""
import functools

import torch
import torch.distributed as dist


def zeropower_via_newtonschulz5(G, steps=5, dtype=None, coefficients=(3.4445, -4.7750, 2.0315)):
    """Orthogonalize G = P S Q^T into about P Q^T: quintic Newton-Schulz, for one matrix or a batch
    (..., rows, cols). Each iteration maps every singular value x to a x + b x^3 + c x^5; Keller
    Jordan's coefficients maximize the slope at 0, so after 5 steps the values land in about
    [0.5, 1.5] (measured: [0.47, 1.21] for x >= 1e-3 ||G||_F), not exactly 1, which training does
    not mind. bfloat16 on CUDA, float32 elsewhere (or `dtype`); returns G's dtype."""
    a, b, c = coefficients
    X = G.to(dtype or (torch.bfloat16 if G.is_cuda else torch.float32))
    tall = G.size(-2) > G.size(-1)
    if tall:  # work with the wide orientation, so that the Gram matrix X X^T is the small one
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # ||X||_2 <= ||X||_F = 1: all s in [0, 1]
    wide_shape = X.shape
    X = X.reshape(-1, *wide_shape[-2:])  # one batch dimension, as baddbmm wants
    for _ in range(steps):
        A = X @ X.mT
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # B = b*A + c*A^2 (fused: one rounding)
        X = torch.baddbmm(X, B, X, beta=a)  # X <- a*X + b*(X X^T) X + c*(X X^T)^2 X
    X = X.reshape(wide_shape)
    return (X.mT if tall else X).to(G.dtype)


def shape_scale(rows, cols, scale='original'):
    """How much a (rows x cols) orthogonalized update is multiplied by, by convention name."""
    if scale == 'original':  # Keller Jordan: tall matrices get a larger step
        return max(1, rows / cols) ** 0.5  # sqrt(max(1, rows/cols))
    # Moonlight (Liu et al. 2025): update RMS ~ AdamW's, so reuse its lr and wd
    if scale == 'match_rms_adamw':
        return 0.2 * max(rows, cols) ** 0.5  # 0.2 * sqrt(max(rows, cols))
    raise ValueError(f"unknown Muon scale {scale!r}: use 'original' or 'match_rms_adamw'")


def muon_momentum(grad, momentum_buffer, beta=0.95, nesterov=True):
    """Muon's step 1: update momentum_buffer in place; return U, the matrix to orthogonalize."""
    momentum_buffer.lerp_(grad, 1 - beta)  # B <- beta*B + (1-beta)*G
    # U = (1-beta)*G + beta*B (Nesterov), or U = B
    return grad.lerp(momentum_buffer, beta) if nesterov else momentum_buffer


def muon_update(grad, momentum_buffer, beta=0.95, nesterov=True, ns_steps=5,
                orthogonalize=zeropower_via_newtonschulz5):
    """Muon's steps 1 and 2 for a matrix or a batch (..., rows, cols): O, the orthogonalized
    momentum; the step is W <- W (1 - lr wd) - lr * shape_scale(rows, cols) * O. Updates
    momentum_buffer in place, like every optimizer's state."""
    update = muon_momentum(grad, momentum_buffer, beta, nesterov)  # 1. momentum
    return orthogonalize(update, ns_steps)  # 2. O ~ P Q^T where U = P S Q^T


def orthogonalize_sharded(updates, ns_steps, rank, world):
    """Newton-Schulz of a batch of matrices under torchrun: each rank its equal share, then every
    rank gathers every share (zero padding fills the last: NS(0) = 0)."""
    share = -(-len(updates) // world)  # ceil(n / world)
    padding = updates.new_zeros((share * world - len(updates), *updates.shape[1:]))
    gathered = torch.cat([updates, padding])
    mine = zeropower_via_newtonschulz5(gathered[rank * share:(rank + 1) * share], steps=ns_steps)
    mine = mine.contiguous()  # a tall matrix's result is X.mT; NCCL sends contiguous only
    dist.all_gather(list(gathered.chunk(world)), mine)
    return gathered[:len(updates)]


def adamw_update(params, grads, exp_avgs, exp_avg_sqs, steps, lr, betas=(0.9, 0.95), eps=1e-8,
                 weight_decay=0.0):
    """One AdamW step, in place, on lists of tensors (torch.optim.AdamW's math, amsgrad=False).

    steps[i] is the step number t of params[i], counting this step. The torch._foreach_* ops update
    a whole list per kernel launch, so hundreds of tiny multiplier tensors cost a few launches.
    """
    beta1, beta2 = betas
    torch._foreach_mul_(params, 1 - lr * weight_decay)  # p <- p * (1 - lr*wd): decoupled WD
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m <- beta1*m + (1-beta1)*g
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)  # v <- beta2*v + (1-beta2)*g^2
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, [(1 - beta2 ** t) ** 0.5 for t in steps])
    torch._foreach_add_(denom, eps)  # d = sqrt(v / (1-beta2^t)) + eps
    step_sizes = [-lr / (1 - beta1 ** t) for t in steps]
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)  # p <- p - lr*m / (1-beta1^t) / d


MUON_DEFAULTS = dict(momentum=0.95, nesterov=True, ns_steps=5, muon_scale='original')
ADAMW_DEFAULTS = dict(betas=(0.9, 0.95), eps=1e-8)


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer for the whole model: Muon for groups with use_muon=True, AdamW for the others.

    Each group needs params, lr, weight_decay, use_muon. Muon groups may set momentum, nesterov,
    ns_steps, muon_scale and AdamW groups betas, eps (defaults: MUON_DEFAULTS, ADAMW_DEFAULTS).
    Any other key (name, initial_lr, ...) is kept as it is. Params whose grad is None are skipped.
    """

    def __init__(self, param_groups):
        super().__init__(param_groups, defaults={})

    def add_param_group(self, group):
        missing = {'params', 'lr', 'weight_decay', 'use_muon'} - group.keys()
        if missing:
            raise ValueError(f'MuonAdamW param group {group.get("name", "")!r} '
                             f'lacks the keys {sorted(missing)}')
        group = {**(MUON_DEFAULTS if group['use_muon'] else ADAMW_DEFAULTS), **group}
        params = group['params']
        group['params'] = [params] if isinstance(params, torch.Tensor) else list(params)
        if group['use_muon']:
            shape_scale(1, 1, group['muon_scale'])  # a bad scale name fails here, not at step 1
            not_2d = [tuple(p.shape) for p in group['params'] if p.ndim != 2]
            if not_2d:
                raise ValueError(f'Muon group {group.get("name", "")!r} holds non-2-D parameters '
                                 f'of shapes {not_2d}: Muon orthogonalizes matrices only; '
                                 'put them in a use_muon=False (AdamW) group')
        super().add_param_group(group)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group['params'] if p.grad is not None]
            if params:
                (self._muon_step if group['use_muon'] else self._adamw_step)(group, params)
        return loss

    def _muon_step(self, group, params):
        """muon_update on each bucket of same-shape matrices, stacked in one batch; then step 3."""
        lr = group['lr']
        orthogonalize = zeropower_via_newtonschulz5
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            orthogonalize = functools.partial(orthogonalize_sharded, rank=dist.get_rank(),
                                              world=dist.get_world_size())
        for shape in dict.fromkeys(p.shape for p in params):  # the same order on every rank
            bucket = [p for p in params if p.shape == shape]
            for p in bucket:
                if 'momentum_buffer' not in self.state[p]:
                    self.state[p]['momentum_buffer'] = torch.zeros_like(p)
            buffers = [self.state[p]['momentum_buffer'] for p in bucket]
            stacked_buffers = torch.stack(buffers)  # every rank keeps every buffer: a full state
            orthogonal = muon_update(torch.stack([p.grad for p in bucket]), stacked_buffers,
                                     group['momentum'], group['nesterov'], group['ns_steps'],
                                     orthogonalize)
            torch._foreach_copy_(buffers, list(stacked_buffers.unbind(0)))
            # 3. decoupled weight decay, then W <- W - lr * scale * O
            scale = shape_scale(*shape, group['muon_scale'])
            torch._foreach_mul_(bucket, 1 - lr * group['weight_decay'])
            torch._foreach_add_(bucket, list(orthogonal.unbind(0)), alpha=-lr * scale)

    def _adamw_step(self, group, params):
        for p in params:
            state = self.state[p]
            if not state:
                state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            state['step'] = int(state['step']) + 1  # int(): torch's AdamW keeps a tensor
        states = [self.state[p] for p in params]
        adamw_update(params, [p.grad for p in params], [s['exp_avg'] for s in states],
                     [s['exp_avg_sq'] for s in states], [s['step'] for s in states],
                     group['lr'], group['betas'], group['eps'], group['weight_decay'])
