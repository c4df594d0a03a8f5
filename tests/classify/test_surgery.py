import math

import pytest
import torch
from torch import nn

from medseg_weak.classify.surgery import (
    RULES,
    GradientRule,
    assign_gradients,
    combine,
    combine_parameters,
    conflict_diagnostics,
    coral_penalty,
    per_hospital_gradients,
)
from medseg_weak.classify.surgery.ops import agreement_sum, count_ones, global_sum, gram_matrix
from medseg_weak.classify.surgery.pcgrad import pcgrad_weights
from medseg_weak.errors import RegistryError

RULE_NAMES = RULES.names()
PARAM_SHAPES = [(8, 3, 3, 3), (8,), (5, 8), (5,), (17,), (2, 3, 5)]  # odd sizes exercise kernel tails


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_grads(hospitals: int = 3, shapes=PARAM_SHAPES, seed: int = 0, dtype=torch.float32):
    gen = seeded(seed)
    grads = [torch.randn(hospitals, *s, generator=gen, dtype=dtype) for s in shapes]
    grads[0][0, 0] = 0.0  # exact zeros must count as disagreement
    return grads


def uniform_losses(hospitals: int) -> torch.Tensor:
    return torch.linspace(0.5, 1.5, hospitals)


# ---- hand-computed values ---------------------------------------------------------------------------

EXAMPLE = torch.tensor([[1.0, -2.0, 0.0, 3.0], [2.0, 1.0, 1.0, 4.0]])


def test_erm_is_the_sum():
    assert torch.equal(combine("erm", EXAMPLE), torch.tensor([3.0, -1.0, 1.0, 7.0]))


def test_agr_sum_zeroes_disagreement_and_zeros():
    assert torch.equal(combine("agr_sum", EXAMPLE), torch.tensor([3.0, 0.0, 0.0, 7.0]))


def test_agr_sum_negative_agreement_kept():
    grads = torch.tensor([[-1.0, -2.0, 1.0], [-3.0, -1.0, -1.0], [-0.5, -0.5, 2.0]])
    assert torch.equal(combine("agr_sum", grads), torch.tensor([-4.5, -3.5, 0.0]))


def test_pcgrad_two_hospitals_by_hand():
    # g1 . g2 = -1 < 0: g1' = g1 - (-1 / |g2|^2) g2 = [0.5, 0.5]; g2' = g2 - (-1 / |g1|^2) g1 = [0, 1].
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    for seed in range(3):
        torch.testing.assert_close(combine("pcgrad", grads, seeded(seed)), torch.tensor([0.5, 1.5]))


def test_pcgrad_without_conflict_is_erm():
    grads = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0], [2.0, 1.0, 1.0]])
    torch.testing.assert_close(combine("pcgrad", grads, seeded(0)), grads.sum(0))


def reference_pcgrad(grads: torch.Tensor, order: list[int]) -> torch.Tensor:
    """DGvGS's loop, transcribed: project the modified g_i off each conflicting ORIGINAL g_j, in order."""
    projected = [g.clone() for g in grads]
    for i in order:
        for j in order:
            if j == i:
                continue
            dot = torch.dot(projected[i], grads[j])
            if dot < 0:
                projected[i] -= dot / (grads[j] ** 2).sum() * grads[j]
    return torch.stack(projected).sum(0)


@pytest.mark.parametrize("seed", range(4))
def test_pcgrad_matches_the_sequential_reference(seed):
    grads = torch.randn(4, 6, generator=seeded(100 + seed), dtype=torch.float64)
    order = torch.randperm(4, generator=seeded(seed)).tolist()
    expected = reference_pcgrad(grads, order)
    torch.testing.assert_close(combine("pcgrad", grads, seeded(seed)), expected)


def test_pcgrad_order_of_projections_matters_and_comes_from_the_generator():
    # Three mutually conflicting gradients: the j-order changes the result, so it must be the drawn one.
    grads = torch.tensor([[1.0, 0.0], [-0.8, 0.6], [-0.6, -0.8]], dtype=torch.float64)
    results = {tuple(reference_pcgrad(grads, list(o)).tolist()) for o in [(0, 1, 2), (0, 2, 1)]}
    assert len(results) == 2
    for seed in range(4):
        order = torch.randperm(3, generator=seeded(seed)).tolist()
        torch.testing.assert_close(combine("pcgrad", grads, seeded(seed)), reference_pcgrad(grads, order))


def test_pcgrad_weights_of_a_zero_gradient_are_safe():
    gram = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    assert torch.equal(pcgrad_weights(gram, [0, 1]), torch.tensor([1.0, 1.0], dtype=torch.float64))


AND_GRADS = torch.tensor(
    [
        # c0: signs +++ (1)   c1: -++ (1/3)   c2: ++0 (2/3)   c3: --+ (-1/3)   c4: --- (-1)   c5: 000 (0)
        [1.0, -1.0, 2.0, -3.0, -1.0, 0.0],
        [2.0, 1.0, 4.0, -3.0, -2.0, 0.0],
        [3.0, 1.0, 0.0, 3.0, -6.0, 0.0],
    ]
)


def test_and_mask_tau_half_by_hand():
    # kept: c0 (mean 2), c2 (mean 2), c4 (mean -3) -> fraction 1/2 -> x2
    out = combine(RULES.get("and_mask")(tau=0.5), AND_GRADS)
    torch.testing.assert_close(out, torch.tensor([4.0, 0.0, 4.0, 0.0, -6.0, 0.0]))


def test_and_mask_default_tau_requires_full_agreement():
    # kept: c0, c4 -> fraction 1/3 -> x3
    out = combine("and_mask", AND_GRADS)
    torch.testing.assert_close(out, torch.tensor([6.0, 0.0, 0.0, 0.0, -9.0, 0.0]))


def test_and_mask_tau_zero_is_the_mean():
    torch.testing.assert_close(combine(RULES.get("and_mask")(tau=0.0), AND_GRADS), AND_GRADS.mean(0))


def test_and_mask_rejects_bad_tau():
    with pytest.raises(ValueError, match="tau"):
        RULES.get("and_mask")(tau=1.5)


def test_group_dro_weight_updates_by_hand():
    rule = RULES.get("group_dro")(eta=0.5)
    grads = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = rule([grads], losses=torch.tensor([1.0, 2.0]))[0]
    q1 = torch.tensor([math.exp(0.5), math.exp(1.0)], dtype=torch.float64)
    q1 /= q1.sum()
    torch.testing.assert_close(rule.q, q1)
    torch.testing.assert_close(out, (2 * q1).float())  # H * sum_i q_i g_i with g = identity
    # second step starts from q1, not from uniform
    out = rule([grads], losses=torch.tensor([2.0, 0.0]))[0]
    q2 = q1 * torch.tensor([math.exp(1.0), 1.0], dtype=torch.float64)
    q2 /= q2.sum()
    torch.testing.assert_close(rule.q, q2)
    torch.testing.assert_close(out, (2 * q2).float())


def test_group_dro_equal_losses_is_erm_and_state_round_trips():
    rule = RULES.get("group_dro")()
    grads = random_grads(3, [(4, 5)])
    out = rule(grads, losses=torch.ones(3))
    torch.testing.assert_close(out[0], grads[0].sum(0))
    rule([g * 2 for g in grads], losses=torch.tensor([1.0, 0.0, 3.0]))
    clone = RULES.get("group_dro")()
    clone.load_state_dict(rule.state_dict())
    torch.testing.assert_close(clone.q, rule.q)


def test_group_dro_needs_losses():
    with pytest.raises(ValueError, match="group_dro needs the per-hospital losses"):
        combine("group_dro", EXAMPLE)


def test_group_dro_rejects_a_changed_number_of_hospitals():
    rule = RULES.get("group_dro")()
    rule([EXAMPLE], losses=torch.ones(2))
    with pytest.raises(ValueError, match="2 hospitals, got 3"):
        rule([torch.ones(3, 4)], losses=torch.ones(3))


# ---- agr_rand ---------------------------------------------------------------------------------------


def test_agr_rand_statistics():
    grads = torch.randn(3, 60_000, generator=seeded(1))
    out = combine("agr_rand", grads, seeded(2))
    agree = ((grads > 0).all(0)) | ((grads < 0).all(0))
    summed = grads.sum(0)
    assert torch.equal(out[agree], summed[agree])  # agreeing components untouched
    m = summed[agree].abs().mean()
    noise = out[~agree] / m
    n = noise.numel()
    assert n > 40_000  # about 3/4 of the components disagree
    assert abs(noise.mean().item()) < 4 / math.sqrt(n)
    assert abs(noise.std().item() - 1.0) < 0.02
    # roughly Gaussian: ~68.3% within one standard deviation
    assert abs((noise.abs() < 1).float().mean().item() - 0.6827) < 0.01


def test_agr_rand_is_deterministic_given_the_generator():
    grads = torch.randn(3, 1000, generator=seeded(1))
    assert torch.equal(combine("agr_rand", grads, seeded(5)), combine("agr_rand", grads, seeded(5)))
    assert not torch.equal(combine("agr_rand", grads, seeded(5)), combine("agr_rand", grads, seeded(6)))


def test_agr_rand_without_any_agreement_gives_a_zero_update():
    grads = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 2.0]])
    assert torch.equal(combine("agr_rand", grads, seeded(0)), torch.zeros(3))


def test_agr_rand_scale_is_global_not_per_parameter():
    # parameter a agrees with |sum| 10, parameter b only disagrees: b's noise is scaled by 10 too
    a = torch.tensor([[4.0], [6.0]])
    b = torch.tensor([[1.0] * 2000, [-1.0] * 2000])
    out = combine_parameters("agr_rand", [a, b], seeded(0))
    assert out[0].item() == 10.0
    assert abs(out[1].std().item() - 10.0) < 1.0


def test_chunked_kernels_match_the_plain_formulas():
    g = torch.randn(3, 100_003, generator=seeded(4))
    g[:, :10] = 0.0
    mask = (g > 0).all(0) | (g < 0).all(0)
    summed, agree = agreement_sum(g)
    assert torch.equal(summed, g.sum(0) * mask)
    assert torch.equal(agree, mask.float())
    g64 = g.double()
    torch.testing.assert_close(gram_matrix([g[:, :5], g[:, 5:]]), g64 @ g64.T, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(global_sum([g, g[0]], absolute=True), g64.abs().sum() + g64[0].abs().sum())
    assert count_ones([mask.float(), agree]).item() == 2 * mask.sum().item()


# ---- contract tests, generated from the registry --------------------------------------------------


@pytest.mark.parametrize("name", RULE_NAMES)
@pytest.mark.parametrize("hospitals", [1, 2, 4])
def test_contract_shape_dtype_finite(name, hospitals):
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        grads = random_grads(hospitals, dtype=dtype)
        out = combine_parameters(name, grads, seeded(0), uniform_losses(hospitals))
        assert len(out) == len(grads)
        for o, g in zip(out, grads):
            assert o.shape == g.shape[1:] and o.dtype == dtype
            assert torch.isfinite(o).all()
        flat = combine(
            name,
            torch.cat([g.reshape(hospitals, -1) for g in grads], 1),
            seeded(0),
            losses=uniform_losses(hospitals),
        )
        assert flat.shape == (sum(g[0].numel() for g in grads),)


@pytest.mark.parametrize("name", RULE_NAMES)
def test_contract_deterministic_and_inputs_untouched(name):
    grads = random_grads(3)
    before = [g.clone() for g in grads]
    first = combine_parameters(name, grads, seeded(7), uniform_losses(3))
    second = combine_parameters(name, grads, seeded(7), uniform_losses(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert all(torch.equal(a, b) for a, b in zip(grads, before))


@pytest.mark.parametrize("name", RULE_NAMES)
def test_contract_flat_equals_per_parameter_exactly(name):
    # one parameter spans several CPU chunks (2**15 columns), so chunk boundaries fall mid-parameter
    grads = random_grads(3, shapes=[*PARAM_SHAPES, (3, 33_335)], seed=3)
    per_param = combine_parameters(name, grads, seeded(11), uniform_losses(3))
    flat = combine(
        name, torch.cat([g.reshape(3, -1) for g in grads], 1), seeded(11), losses=uniform_losses(3)
    )
    assert torch.equal(torch.cat([p.reshape(-1) for p in per_param]), flat)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", RULE_NAMES)
def test_contract_on_cuda(name):
    # the GPU path uses other chunk sizes; flat and per-parameter must still agree exactly
    grads = [g.cuda() for g in random_grads(3, shapes=[*PARAM_SHAPES, (3, 33_335)], seed=3)]
    losses = uniform_losses(3).cuda()
    per_param = combine_parameters(name, grads, torch.Generator("cuda").manual_seed(11), losses)
    flat_grads = torch.cat([g.reshape(3, -1) for g in grads], 1)
    flat = combine(name, flat_grads, torch.Generator("cuda").manual_seed(11), losses=losses)
    assert torch.equal(torch.cat([p.reshape(-1) for p in per_param]), flat)
    if name not in ("agr_rand", "pcgrad"):  # random draws differ between CPU and CUDA generators
        on_cpu = combine_parameters(name, [g.cpu() for g in grads], seeded(11), losses.cpu())
        for c, p in zip(on_cpu, per_param):
            torch.testing.assert_close(p.cpu(), c)


@pytest.mark.parametrize("name", RULE_NAMES)
def test_contract_non_finite_input_stays_visible(name):
    # AMP's GradScaler skips a step when it finds inf/NaN in .grad: a rule must not hide them.
    for bad in (float("inf"), float("nan")):
        grads = random_grads(3)
        grads[2][1, 3] = bad
        out = combine_parameters(name, grads, seeded(0), uniform_losses(3))
        assert not all(torch.isfinite(o).all() for o in out), f"{name} hid a {bad}"


@pytest.mark.parametrize("name", RULE_NAMES)
def test_contract_identical_hospitals(name):
    # every hospital agrees: no rule has anything to remove, so each reduces to a multiple of g
    g = torch.rand(50, generator=seeded(0)) + 0.1
    grads = g.expand(3, 50).clone()
    out = combine(name, grads, seeded(0), losses=torch.ones(3))
    expected = g if name == "and_mask" else 3 * g  # and_mask averages instead of summing
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("name", RULE_NAMES)
def test_contract_instances_are_gradient_rules(name):
    assert isinstance(RULES.get(name)(), GradientRule)


def test_erm_of_identical_gradients_is_h_times_g_even_with_mixed_signs():
    g = torch.tensor([1.0, -2.0, 0.0, 3.5])
    assert torch.equal(combine("erm", g.expand(4, 4).clone()), 4 * g)


# ---- errors -----------------------------------------------------------------------------------------


def test_unknown_rule_lists_valid_names():
    with pytest.raises(RegistryError) as info:
        combine("agr_summ", EXAMPLE)
    assert "Did you mean 'agr_sum'" in str(info.value)
    assert ", ".join(RULE_NAMES) in str(info.value)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\[hospitals, parameters\]"):
        combine("erm", torch.ones(4))
    with pytest.raises(ValueError, match="same number of hospitals"):
        combine_parameters("erm", [torch.ones(3, 2), torch.ones(2, 2)])
    with pytest.raises(ValueError, match="losses must be a tensor"):
        combine("group_dro", EXAMPLE, losses=torch.ones(3))
    with pytest.raises(ValueError, match="list of per-parameter"):
        combine_parameters("erm", EXAMPLE)
    with pytest.raises(ValueError, match="empty"):
        combine_parameters("erm", [])
    with pytest.raises(ValueError, match="float tensor"):
        combine_parameters("erm", [torch.ones(2, 3, dtype=torch.int64)])


# ---- per-hospital gradients -------------------------------------------------------------------------


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )  # fmt: skip


def hospital_batches(hospitals: int = 3, sizes=(4, 5, 3)):
    gen = seeded(0)
    return [(torch.randn(sizes[h], 1, 10, 10, generator=gen), torch.randint(0, 3, (sizes[h],), generator=gen))
            for h in range(hospitals)]  # fmt: skip


def test_per_hospital_gradients_equal_the_naive_loop_with_train_mode_batchnorm():
    batches = hospital_batches()
    loss_fn = nn.functional.cross_entropy
    naive_model, model = tiny_cnn(), tiny_cnn()
    model.train(), naive_model.train()
    naive, naive_losses = [], []
    for x, y in batches:  # the reference: per-hospital forward + backward, copy .grad
        naive_model.zero_grad()
        loss = loss_fn(naive_model(x), y)
        loss.backward()
        naive.append([p.grad.clone() for p in naive_model.parameters()])
        naive_losses.append(loss.detach())

    grads, losses = per_hospital_gradients(model, loss_fn, batches)
    expected = [torch.stack(per_param) for per_param in zip(*naive)]
    assert len(grads) == len(expected)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(losses, torch.stack(naive_losses))
    for b, nb in zip(model.buffers(), naive_model.buffers()):  # same BN running statistics
        torch.testing.assert_close(b, nb)
    assert all(p.grad is None for p in model.parameters())  # .grad untouched


def test_erm_rule_on_per_hospital_gradients_is_the_gradient_of_the_summed_losses():
    batches = hospital_batches()
    model = tiny_cnn().eval()  # eval-mode BN: identical forward for both computations
    grads, _ = per_hospital_gradients(model, nn.functional.cross_entropy, batches)
    sum(nn.functional.cross_entropy(model(x), y) for x, y in batches).backward()
    for g, p in zip(combine_parameters("erm", grads), model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)


def test_per_hospital_gradients_skip_frozen_and_zero_unused_parameters():
    model = tiny_cnn()
    model[0].weight.requires_grad_(False)
    model.unused = nn.Parameter(torch.ones(2))
    grads, losses = per_hospital_gradients(model, nn.functional.cross_entropy, hospital_batches())
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [g.shape[1:] for g in grads] == [p.shape for _, p in trainable]
    assert "0.weight" not in dict(trainable)
    unused = [n for n, _ in trainable].index("unused")
    assert torch.equal(grads[unused], torch.zeros(3, 2)) and losses.shape == (3,)


def test_assign_gradients_writes_grad_and_checks_shapes():
    model = tiny_cnn()
    grads, _ = per_hospital_gradients(model, nn.functional.cross_entropy, hospital_batches())
    combined = combine_parameters("agr_sum", grads)
    assign_gradients(model.parameters(), combined)
    assert all(torch.equal(p.grad, c) for p, c in zip(model.parameters(), combined))
    with pytest.raises(ValueError, match="parameters but"):
        assign_gradients(model.parameters(), combined[:-1])
    with pytest.raises(ValueError, match="shape"):
        assign_gradients([model[0].bias], [torch.zeros(5)])


# ---- diagnostics ------------------------------------------------------------------------------------


def test_diagnostics_opposite_gradients():
    g = torch.tensor([1.0, -2.0, 3.0])
    out = conflict_diagnostics([torch.stack([g, -g])], ["w"])
    assert out["disagree/w"] == 1.0 and out["disagree/all"] == 1.0
    assert out["cos/h0-h1"] == pytest.approx(-1.0)
    assert out["norm/h0"] == pytest.approx(math.sqrt(14))


def test_diagnostics_per_layer_fractions_and_cosines():
    a = torch.tensor([[1.0, -1.0], [1.0, 1.0], [2.0, 1.0]])  # 1 of 2 components disagrees
    b = torch.tensor([[[0.0, 2.0]], [[0.0, 2.0]], [[0.0, 0.0]]])  # zeros disagree: 2 of 2
    out = conflict_diagnostics([a, b], ["layer.weight", "layer.bias"])
    assert out["disagree/layer.weight"] == 0.5
    assert out["disagree/layer.bias"] == 1.0
    assert out["disagree/all"] == 0.75
    h0, h1, h2 = torch.tensor([[1.0, -1.0, 0.0, 2.0], [1.0, 1.0, 0.0, 2.0], [2.0, 1.0, 0.0, 0.0]])
    for (i, j), (u, v) in {(0, 1): (h0, h1), (0, 2): (h0, h2), (1, 2): (h1, h2)}.items():
        assert out[f"cos/h{i}-h{j}"] == pytest.approx(float(u @ v / (u.norm() * v.norm())))


def test_diagnostics_zero_gradient_has_cosine_zero_and_names_must_match():
    out = conflict_diagnostics([torch.tensor([[0.0, 0.0], [1.0, 2.0]])], ["w"])
    assert out["cos/h0-h1"] == 0.0
    with pytest.raises(ValueError, match="names"):
        conflict_diagnostics([EXAMPLE], ["a", "b"])


# ---- CORAL ------------------------------------------------------------------------------------------


def test_coral_known_values():
    a = torch.tensor([[0.0], [2.0]])  # mean 1, unbiased variance 2
    b = torch.tensor([[1.0], [1.0]])  # mean 1, variance 0
    assert coral_penalty([a, b]).item() == pytest.approx(4.0)
    c = torch.tensor([[3.0], [3.0]])  # mean 3, variance 0
    # pairs: (a,b) 0 + 4; (a,c) 4 + 4; (b,c) 4 + 0 -> 16 / 3
    assert coral_penalty([a, b, c]).item() == pytest.approx(16 / 3)


def test_coral_matches_domainbed_formula_and_is_differentiable():
    gen = seeded(0)
    x = torch.randn(6, 4, generator=gen, requires_grad=True)
    y = torch.randn(5, 4, generator=gen) * 2 + 1
    penalty = coral_penalty([x, y])
    mx, my = x.mean(0), y.mean(0)
    cx, cy = torch.cov(x.T), torch.cov(y.T)
    torch.testing.assert_close(penalty, (mx - my).pow(2).mean() + (cx - cy).pow(2).mean())
    penalty.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_coral_edge_cases():
    x = torch.randn(4, 3)
    assert coral_penalty([x, x.clone()]).item() == pytest.approx(0.0, abs=1e-7)
    assert coral_penalty([x]).item() == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        coral_penalty([x, x[:1]])
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        coral_penalty([x, torch.randn(4, 2)])
