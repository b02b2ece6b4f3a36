"""
Muon for nanoLRM's hidden matrices and AdamW for everything else, in one optimizer: MuonAdamW.

Muon (Keller Jordan, 2024; https://kellerjordan.github.io/posts/muon/) moves a weight matrix W in
three steps, given its gradient G:
  1. momentum        B <- beta*B + (1-beta)*G;  U = (1-beta)*G + beta*B  (Nesterov)  or  U = B
  2. orthogonalize   U = P S Q^T  ->  O ~ P Q^T, by five Newton-Schulz iterations (no SVD)
  3. shape scale     W <- W - lr * scale(rows, cols) * O
Step 2 gives every direction of the update about the same size, so the few dominant directions of
the gradient no longer drown the rest. That only makes sense for a matrix that maps one hidden
state linearly to another: Muon for attention Q, K, V, O and MLP gate, up, down, and nothing else.
NOT Muon, but AdamW (per-coordinate steps):
  - the token embedding and the LM head: their rows are per-token lookups and per-token outputs, not
    a linear map of a hidden state; each row should move at its own token's pace, as Adam does;
  - norm gains and biases: vectors, there is nothing to orthogonalize;
  - ALL learnable multipliers of nanoLRM (scalar s, rows r, columns c): scalars and vectors, trained
    by AdamW with their own LR and a small weight decay (2e-3, the paper's value).

Param groups carry use_muon=True (Muon) or use_muon=False (AdamW), each with its own lr and
weight_decay. Weight decay is decoupled in both kinds: W <- W * (1 - lr*wd), before the update.
The algorithm exists once: muon_update() is steps 1-3 for one matrix or a batch, and MuonAdamW
calls the same three functions (muon_momentum, zeropower_via_newtonschulz5, shape_scale) on each
bucket of same-shape matrices stacked into one batch.

Distributed: when torch.distributed is initialized, every rank still updates every momentum buffer
(cheap, and any rank's state_dict is then complete), but each rank orthogonalizes only its share of
every bucket of same-shape matrices and all_gathers the others' shares, so all ranks end with the
same parameters as one process would. Gradients must already be averaged over ranks (DDP does that),
so every rank steps the same parameters with the same gradients.
"""
import torch
import torch.distributed as dist


def zeropower_via_newtonschulz5(G, steps=5, dtype=None, coefficients=(3.4445, -4.7750, 2.0315)):
    """Orthogonalize G = P S Q^T into about P Q^T (its "zeroth power"): quintic Newton-Schulz.

    Each iteration maps every singular value s to a*s + b*s^3 + c*s^5 and leaves P, Q alone.
    The coefficients (3.4445, -4.7750, 2.0315) maximize the slope a at zero, so small singular
    values grow as fast as possible; the price is that they do not converge to exactly 1 but land
    roughly in [0.5, 1.5] after 5 steps (measured: [0.47, 1.21] for all s >= 1e-3 * ||G||_F),
    which does not hurt training. (The classic cubic (1.5, -0.5, 0) converges to exactly 1, only
    much more slowly.)
    G may be a batch (..., rows, cols) of same-shape matrices: one call orthogonalizes them all.
    Runs in bfloat16 on CUDA (fast, and the iteration shrugs off the rounding) and in float32
    elsewhere (bfloat16 matmul is slow or missing on CPU); `dtype` overrides. Returns G's dtype.
    Each sum is fused into its matrix product (baddbmm: one rounding, not four): in bfloat16 the
    result lands ~1.3% from the exact one instead of ~2.7%, and on CPU it is faster too.
    """
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
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # B = b*A + c*A^2
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


def muon_update(grad, momentum_buffer, beta=0.95, nesterov=True, ns_steps=5, scale='original'):
    """Muon's update O for a matrix or a batch (..., rows, cols); the step is W <- W - lr*O.

    Updates momentum_buffer in place, like every optimizer's state.
    """
    update = muon_momentum(grad, momentum_buffer, beta, nesterov)  # 1. momentum
    update = zeropower_via_newtonschulz5(update, steps=ns_steps)  # 2. O ~ P Q^T where U = P S Q^T
    return update * shape_scale(grad.size(-2), grad.size(-1), scale)  # 3. shape scale


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
        """muon_update's three steps on each bucket of same-shape matrices, batched, sharded."""
        lr = group['lr']
        distributed = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        # one bucket per shape, in the same order on every rank
        for shape in dict.fromkeys(p.shape for p in params):
            bucket = [p for p in params if p.shape == shape]
            for p in bucket:
                if 'momentum_buffer' not in self.state[p]:
                    self.state[p]['momentum_buffer'] = torch.zeros_like(p)
            buffers = [self.state[p]['momentum_buffer'] for p in bucket]
            # 1. momentum, on every rank for every matrix (so any rank's state_dict is complete)
            stacked_buffers = torch.stack(buffers)
            updates = muon_momentum(torch.stack([p.grad for p in bucket]), stacked_buffers,
                                    group['momentum'], group['nesterov'])
            torch._foreach_copy_(buffers, list(stacked_buffers.unbind(0)))
            # 2. orthogonalize in one batched call; with several ranks, each takes an equal share
            share = -(-len(bucket) // world)  # ceil(n / world)
            padding = updates.new_zeros((share * world - len(bucket), *shape))  # NS(0) = 0
            updates = torch.cat([updates, padding])
            mine = zeropower_via_newtonschulz5(updates[rank * share:(rank + 1) * share],
                                               steps=group['ns_steps'])
            mine = mine.contiguous()  # a tall matrix's result is X.mT; NCCL sends contiguous only
            if world > 1:
                dist.all_gather(list(updates.chunk(world)), mine)  # every rank gets every share
            else:
                updates = mine
            orthogonal = list(updates[:len(bucket)].unbind(0))
            # 3. shape scale, decoupled weight decay, and the step
            scale = shape_scale(*shape, group['muon_scale'])
            torch._foreach_mul_(bucket, 1 - lr * group['weight_decay'])  # W <- W * (1 - lr*wd)
            torch._foreach_add_(bucket, orthogonal, alpha=-lr * scale)  # W <- W - lr * scale * O

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
