"""
nanoLRM tests: CPU only, no network, a few minutes on 2 cores.  Run: python -m pytest -q test_basic.py

Tiny-shakespeare is read from $TINYSHAKESPEARE, else data/shakespeare_char/input.txt (what
data/shakespeare_char/prepare.py downloads), else ../shared/data/tinyshakespeare/input.txt.
"""
import itertools
import json
import os

import pytest
import torch

import train
from data.common import prepare_text
from model import GPT, PLACEMENTS, GPTConfig, MLinear

REPO = os.path.dirname(os.path.abspath(__file__))
MULT_FLAGS = ('scalar_mult', 'row_mult', 'col_mult')
ALL_COMBOS = [dict(zip(MULT_FLAGS, bits)) for bits in itertools.product((False, True), repeat=3)]


def shakespeare_path():
    candidates = [os.environ.get('TINYSHAKESPEARE', ''), os.path.join(REPO, 'data/shakespeare_char/input.txt'),
                  os.path.join(REPO, '../shared/data/tinyshakespeare/input.txt')]
    path = next((p for p in candidates if p and os.path.exists(p)), None)
    assert path, 'tiny-shakespeare not found: set TINYSHAKESPEARE=path/to/input.txt'
    return path


@pytest.fixture(scope='session')
def char_data(tmp_path_factory):
    """tiny-shakespeare, char-level, prepared once into a temporary folder."""
    folder = str(tmp_path_factory.mktemp('shakespeare_char'))
    with open(shakespeare_path()) as f:
        prepare_text(f.read(), folder, 'char')
    return folder


def tiny_config(**overrides):
    return GPTConfig(**{**dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32), **overrides})


def run(char_data, out_dir, *flags):
    """A short CPU training run through train.py's command line; returns its log.jsonl lines."""
    train.main(['--dataset', char_data, '--out_dir', str(out_dir), '--device', 'cpu', '--n_layer', '2',
                '--n_head', '2', '--n_embd', '48', '--block_size', '32', '--batch_size', '8', '--eval_iters', '4',
                '--warmup_iters', '5', '--log_interval', '1000', '--sample_tokens', '0', *flags])
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------------------------------
# model.py: multipliers


@pytest.mark.parametrize('placement', PLACEMENTS)
def test_multipliers_at_init_leave_logits_unchanged(placement):
    idx = torch.randint(0, 65, (2, 16))
    torch.manual_seed(0)
    base_logits, _ = GPT(tiny_config()).forward(idx, idx)
    for combo in ALL_COMBOS[1:]:
        torch.manual_seed(0)
        logits, _ = GPT(tiny_config(mult_placement=placement, **combo)).forward(idx, idx)
        assert torch.equal(logits, base_logits), combo


def test_fixed_multipliers_are_the_initial_learnable_scalars():
    fixed = dict(embed_mult=2.0, logit_mult=0.5, attn_logit_mult=1.5, attn_out_mult=0.7, mlp_out_mult=0.8)
    idx = torch.randint(0, 65, (2, 16))
    torch.manual_seed(0)
    plain, _ = GPT(tiny_config()).forward(idx, idx)
    torch.manual_seed(0)
    fixed_model = GPT(tiny_config(**fixed))
    with_fixed, _ = fixed_model(idx, idx)
    torch.manual_seed(0)
    learnable = GPT(tiny_config(scalar_mult=True, **fixed))
    with_learnable, _ = learnable(idx, idx)
    assert not torch.allclose(plain, with_fixed)  # the fixed multipliers act ...
    assert torch.allclose(with_fixed, with_learnable, atol=1e-5)  # ... and a learnable scalar starts there
    assert learnable.head.scalar_mult.item() == 0.5 and learnable.blocks[0].attn.q.scalar_mult.item() == 1.5
    assert learnable.blocks[0].attn.k.scalar_mult.item() == 1.0


@pytest.mark.parametrize('placement', PLACEMENTS)
@pytest.mark.parametrize('combo', ALL_COMBOS)
def test_each_flag_adds_exactly_its_multipliers(placement, combo):
    model = GPT(tiny_config(mult_placement=placement, **combo))
    for name, layer in model.matrix_layers().items():
        allowed = PLACEMENTS[placement][name.split('.')[-1]]
        for kind, flag in zip(('scalar', 'row', 'col'), MULT_FLAGS):
            p = getattr(layer, f'{kind}_mult')
            assert (p is not None) == (combo[flag] and kind in allowed), (name, kind)
            if p is not None:
                expected = {'scalar': (), 'row': (layer.weight.shape[0],), 'col': (layer.weight.shape[1],)}[kind]
                assert p.shape == expected
        assert name != 'head' or (layer.row_mult is None and layer.col_mult is None)  # paper: never on the head
    n_mults = sum(p.numel() for p in model.params_by_kind()['multipliers'])
    n_base = sum(p.numel() for p in GPT(tiny_config()).parameters())
    assert sum(p.numel() for p in model.parameters()) == n_base + n_mults
    assert (n_mults > 0) == any(combo.values())


def test_embedding_multipliers_scale_dimensions_and_tokens():
    model = GPT(tiny_config(row_mult=True, col_mult=True))
    assert model.embed.row_mult.shape == (32,) and model.embed.col_mult.shape == (65,)  # per dim, per token
    with torch.no_grad():
        model.embed.col_mult[7] = 3.0
        model.embed.row_mult[0] = 2.0
    vec = torch.nn.functional.embedding(torch.tensor([7]), model.embed.effective_weight().t())[0]
    expected = model.embed.weight[:, 7] * 3.0
    expected[0] *= 2.0
    assert torch.allclose(vec, expected)


def test_autograd_gradients_equal_the_papers_formulas():
    torch.manual_seed(0)
    layer = MLinear(5, 4, ('scalar', 'row', 'col'))
    with torch.no_grad():  # move away from 1 so every factor matters
        layer.scalar_mult.fill_(1.7)
        layer.row_mult.uniform_(0.5, 2.0)
        layer.col_mult.uniform_(0.5, 2.0)
    x, upstream = torch.randn(3, 5), torch.randn(3, 4)
    (layer(x) * upstream).sum().backward()
    G = upstream.t() @ x  # dL/dW of the effective matrix W
    s, r, c, W = layer.scalar_mult.detach(), layer.row_mult.detach(), layer.col_mult.detach(), layer.weight.detach()
    assert torch.allclose(layer.weight.grad, s * r[:, None] * c[None, :] * G, atol=1e-5)  # dL/dW~_ij = s r_i c_j G_ij
    assert torch.allclose(layer.row_mult.grad, (s * W * c[None, :] * G).sum(1), atol=1e-5)  # sum_j s W~_ij c_j G_ij
    assert torch.allclose(layer.col_mult.grad, (s * r[:, None] * W * G).sum(0), atol=1e-5)  # sum_i s r_i W~_ij G_ij
    assert torch.allclose(layer.scalar_mult.grad, (r[:, None] * W * c[None, :] * G).sum(), atol=1e-5)


def test_observables_report_matrix_rms_and_multiplier_stats():
    model = GPT(tiny_config(row_mult=True))
    stats = model.observables()
    assert abs(stats['blocks.0.attn.q.weight_rms'] - 0.02) < 0.005  # initialized with std 0.02
    assert stats['blocks.1.mlp.down.row_mult_mean'] == 1.0 and stats['embed.row_mult_max'] == 1.0
    assert 'head.row_mult_mean' not in stats and all(isinstance(v, float) for v in stats.values())


# ---------------------------------------------------------------------------------------------------
# train.py: flags, parameter groups, clipping, schedule


def test_flags_parse_every_boolean_and_value_form():
    assert train.parse_flags(['--row_mult', '--n_layer=3', '--n_head', '4'])['row_mult'] is True
    assert train.parse_flags(['--no-muon_nesterov'])['muon_nesterov'] is False
    assert train.parse_flags(['--col_mult=false', '--compile=1']) == dict(col_mult=False, compile=True)
    assert train.parse_flags(['--mult_lr', '3e-3', '--mult_placement', 'symmetry_free']) == \
        dict(mult_lr=3e-3, mult_placement='symmetry_free')
    assert train.settings_from([]) == train.Settings()  # no flags: the plain baseline
    assert not any((train.Settings().scalar_mult, train.Settings().row_mult, train.Settings().col_mult))


@pytest.mark.parametrize('argv, named', [
    (['--bogus', '1'], '--bogus'),
    (['--n_layer', 'six'], '--n_layer'),
    (['--schedule', 'linear'], '--schedule'),
    (['--row_mult=maybe'], '--row_mult'),
    (['--n_embd', '100', '--n_head', '3'], '--n_embd'),
    (['--min_lr', '0', '--schedule', 'wsd'], '--min_lr'),
    (['--resume', '--out_dir', '/nonexistent/nanolrm'], '--resume'),
])
def test_bad_flags_exit_2_with_one_line_naming_the_flag(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.settings_from(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and named in err, err


def test_help_lists_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        train.parse_flags(['--help'])
    out = capsys.readouterr().out
    for f in train.fields(train.Settings):
        assert f'--{f.name}' in out
    assert '(default: 0.002)' in out  # --mult_wd


def test_parameter_groups_carry_the_right_lr_and_weight_decay():
    s = train.Settings(row_mult=True, col_mult=True, learning_rate=1e-3, mult_lr=3e-3, weight_decay=0.1)
    model = GPT(tiny_config(row_mult=True, col_mult=True))
    groups = {g['name']: g for g in train.param_groups(model, s)}
    assert (groups['matrices']['weight_decay'], groups['matrices']['lr']) == (0.1, 1e-3)
    assert (groups['embed_head']['weight_decay'], groups['gains']['weight_decay']) == (0.1, 0.0)
    assert (groups['multipliers']['weight_decay'], groups['multipliers']['lr']) == (2e-3, 3e-3)  # paper rule 1
    grouped = [id(p) for g in groups.values() for p in g['params']]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    assert all(p.ndim < 2 for p in groups['multipliers']['params'])
    plain = {g['name'] for g in train.param_groups(GPT(tiny_config()), train.Settings())}
    assert plain == {'matrices', 'embed_head', 'gains'}


@pytest.mark.parametrize('clip_multipliers', [False, True])
def test_huge_multiplier_gradients_shrink_other_updates_only_when_clipped_together(clip_multipliers):
    s = train.Settings(scalar_mult=True, row_mult=True, col_mult=True, clip_multipliers=clip_multipliers)
    model = GPT(tiny_config(scalar_mult=True, row_mult=True, col_mult=True))
    groups = train.param_groups(model, s)
    for g in groups:
        for p in g['params']:
            p.grad = torch.full_like(p, 1e3 if g['name'] == 'multipliers' else 1e-4)
    others = [p for g in groups if g['name'] != 'multipliers' for p in g['params']]
    before = torch.cat([p.grad.flatten() for p in others]).norm()
    assert before < 1.0  # the others alone are under the clip threshold
    torch.nn.utils.clip_grad_norm_(train.clipped_params(groups, s), 1.0)
    after = torch.cat([p.grad.flatten() for p in others]).norm()
    if clip_multipliers:
        assert after < 1e-3 * before  # the paper's failure mode: everything is shrunk
    else:
        assert torch.equal(after, before)


@pytest.mark.parametrize('schedule', ['cosine', 'wsd'])
def test_lr_schedule_warms_up_then_decays_to_min_lr(schedule):
    s = train.Settings(schedule=schedule, max_iters=1000, warmup_iters=100, learning_rate=1e-3, min_lr=1e-4)
    factors = [train.lr_factor(it, s) for it in range(1001)]
    assert factors[0] < 0.02 and abs(factors[100] - 1.0) < 1e-9
    assert abs(factors[1000] - 0.1) < 1e-9 and all(a >= b for a, b in zip(factors[100:], factors[101:]))
    stable = [f for f in factors[100:] if f == 1.0]
    assert (len(stable) >= 700) == (schedule == 'wsd')  # wsd holds the peak until the last decay_frac=0.2


# ---------------------------------------------------------------------------------------------------
# train.py: real runs on tiny-shakespeare


@pytest.mark.parametrize('mult_flags', [[], ['--scalar_mult', '--row_mult', '--col_mult']])
def test_short_training_run_lowers_val_loss(char_data, tmp_path, mult_flags):
    log = run(char_data, tmp_path, '--max_iters', '60', '--eval_interval', '60', '--learning_rate', '3e-3', *mult_flags)
    assert [line['iter'] for line in log] == [0, 60]
    assert log[-1]['val_loss'] < log[0]['val_loss'] - 0.8, log
    assert ('embed.row_mult_mean' in log[-1]) == bool(mult_flags)
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert ckpt['iter'] == 60 and ckpt['settings']['row_mult'] == bool(mult_flags)


def test_resume_reproduces_the_uninterrupted_run(char_data, tmp_path):
    flags = ['--eval_interval', '10', '--lr_decay_iters', '20', '--row_mult', '--col_mult', '--dropout', '0.1']
    full = run(char_data, tmp_path / 'full', '--max_iters', '20', *flags)
    run(char_data, tmp_path / 'parts', '--max_iters', '10', *flags)
    resumed = run(char_data, tmp_path / 'parts', '--max_iters', '20', '--resume')
    assert [line['iter'] for line in resumed] == [0, 10, 20]
    for a, b in zip(full, resumed):
        assert (a['train_loss'], a['val_loss'], a['lr']) == (b['train_loss'], b['val_loss'], b['lr'])


def test_resume_refuses_a_different_architecture(char_data, tmp_path, capsys):
    run(char_data, tmp_path, '--max_iters', '0')
    with pytest.raises(SystemExit) as exit_info:
        train.settings_from(['--resume', '--out_dir', str(tmp_path), '--n_layer', '3'])
    assert exit_info.value.code == 2 and '--n_layer' in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# folding the multipliers into plain weights, and sampling (sample.py)


@pytest.mark.parametrize('placement', PLACEMENTS)
@pytest.mark.parametrize('combo', ALL_COMBOS)
def test_folded_model_computes_the_same_logits_with_the_baseline_size(placement, combo):
    fixed = dict(embed_mult=1.3, logit_mult=0.7, attn_logit_mult=1.2, attn_out_mult=0.9, mlp_out_mult=1.1)
    model = GPT(tiny_config(mult_placement=placement, **combo, **fixed))
    with torch.no_grad():  # trained multipliers are not 1: move them
        for p in model.params_by_kind()['multipliers']:
            p.mul_(torch.empty_like(p).uniform_(0.5, 2.0))
    folded = model.fold_multipliers()
    idx = torch.randint(0, 65, (2, 32))
    logits, folded_logits = model(idx, idx)[0], folded(idx, idx)[0]
    assert (folded_logits - logits).norm() <= 1e-5 * logits.norm()
    assert sum(p.numel() for p in folded.parameters()) == sum(p.numel() for p in GPT(tiny_config()).parameters())
    assert not folded.params_by_kind()['multipliers']


@pytest.fixture(scope='session')
def trained_out_dir(char_data, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('trained')
    run(char_data, out_dir, '--max_iters', '30', '--eval_interval', '30', '--learning_rate', '3e-3',
        '--scalar_mult', '--row_mult', '--col_mult')
    return out_dir


def test_sample_folds_exports_and_generates_text(trained_out_dir, capsys):
    import sample
    export = trained_out_dir / 'folded.pt'
    sample.main(['--out_dir', str(trained_out_dir), '--prompt', 'ROMEO:', '--max_new_tokens', '40', '--fold',
                 '--export', str(export), '--device', 'cpu'])
    out = capsys.readouterr().out
    assert 'ROMEO:' in out and '(multipliers folded)' in out
    original, _ = sample.load_model(sample.SampleSettings(out_dir=str(trained_out_dir)), 'cpu')
    folded, _ = sample.load_model(sample.SampleSettings(ckpt=str(export)), 'cpu')
    assert not folded.params_by_kind()['multipliers'] and original.params_by_kind()['multipliers']
    idx = torch.randint(0, 65, (1, 32))
    assert torch.allclose(folded(idx, idx)[0], original(idx, idx)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('content', [b'not a checkpoint', 'foreign'])
def test_sample_rejects_corrupt_or_foreign_checkpoints(tmp_path, content, capsys):
    import sample
    path = tmp_path / 'ckpt.pt'
    if content == 'foreign':
        torch.save({'state_dict': {'w': torch.ones(2)}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        sample.main(['--ckpt', str(path), '--device', 'cpu'])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and '--ckpt' in err and str(path) in err and '\n' not in err
