import pytest
import torch

from optin.engine.losses import kl_divergence, manifold_distance, manifold_distance_direct, teacher_gram_dd


@pytest.mark.parametrize("rows,dim", [(12, 16), (40, 8)])  # K <= D and K > D take different forms
def test_manifold_distance_matches_definition(rows, dim):
    g = torch.Generator().manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(rows, dim, generator=g), dim=-1)
    student = torch.nn.functional.normalize(teacher + 0.05 * torch.randn(3, rows, dim, generator=g), dim=-1)
    fast = manifold_distance(teacher, student, teacher_gram_dd(teacher))
    direct = torch.stack([manifold_distance_direct(teacher, s) for s in student])
    torch.testing.assert_close(fast, direct, rtol=1e-4, atol=0)


def test_manifold_distance_keeps_precision_for_tiny_drift():
    # A unit that barely matters: float32 Gram matrices subtracted directly would lose every digit.
    g = torch.Generator().manual_seed(1)
    teacher = torch.nn.functional.normalize(torch.randn(64, 32, generator=g, dtype=torch.float64), dim=-1)
    student = torch.nn.functional.normalize(teacher + 1e-4 * torch.randn(64, 32, generator=g, dtype=torch.float64), dim=-1)
    exact = manifold_distance_direct(teacher, student)
    fast = manifold_distance(teacher.float(), student.float().unsqueeze(0))
    assert float(fast[0]) == pytest.approx(float(exact), rel=2e-2)


def test_manifold_distance_is_zero_for_identical_features():
    rows = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1)
    assert float(manifold_distance(rows, rows.unsqueeze(0))[0]) == 0.0


def test_kl_matches_torch_kl_div():
    g = torch.Generator().manual_seed(0)
    zt, zs = torch.randn(6, 4, generator=g), torch.randn(2, 6, 4, generator=g)
    ours = kl_divergence(zt, zs, temperature=4.0, divide_logits=True, reduction="batchmean",
                         dtype=torch.float64, clamp=False)
    for v in range(2):
        expected = torch.nn.functional.kl_div(
            torch.log_softmax(zs[v].double() / 4, -1), torch.log_softmax(zt.double() / 4, -1),
            reduction="batchmean", log_target=True) * 16
        assert float(ours[v]) == pytest.approx(float(expected), rel=1e-12)
    summed = kl_divergence(zt, zs, temperature=4.0, divide_logits=False, reduction="sum",
                           dtype=torch.float32, clamp=True)
    pt = torch.softmax(zt, -1)
    manual = 16 * (pt * (torch.log(pt) - torch.log_softmax(zs[0], -1))).sum()
    assert float(summed[0]) == pytest.approx(float(manual), rel=1e-5)


def test_single_output_regressor_uses_the_squared_error_of_its_output():
    """KL of one logit is 0 for every unit; the regressor's logit term is (z_s - z_t)^2."""
    zt, zs = torch.tensor([[1.0], [2.0], [-1.0]]), torch.tensor([[[1.5], [2.0], [0.0]], [[1.0], [2.0], [-1.0]]])
    mean = kl_divergence(zt, zs, temperature=4.0, divide_logits=True, reduction="batchmean", dtype=torch.float64, clamp=False)
    total = kl_divergence(zt, zs, temperature=4.0, divide_logits=False, reduction="sum", dtype=torch.float32, clamp=True)
    assert mean.tolist() == pytest.approx([(0.25 + 0 + 1) / 3, 0.0])
    assert total.tolist() == pytest.approx([1.25, 0.0])
