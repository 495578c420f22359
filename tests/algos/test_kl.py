"""KL estimators: hand values, non-negativity of k3, zeros at equality, unbiasedness by sampling."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import KL_ESTIMATORS
from rlvr.algos.kl import fk1, fk2, fk3, k1, k2, k3

close = torch.testing.assert_close


def test_registered_names():
    assert KL_ESTIMATORS["k1"] is k1
    assert KL_ESTIMATORS["k2"] is k2
    assert KL_ESTIMATORS["k3"] is k3


def test_hand_values():
    # d = logp - ref:   1,  -1,  ln 2,  -2.5
    logp = torch.tensor([[-1.0, -2.0, math.log(0.5), -3.0]])
    ref = torch.tensor([[-2.0, -1.0, math.log(0.25), -0.5]])
    # k1 = d
    close(k1(logp, ref), torch.tensor([[1.0, -1.0, 0.693147, -2.5]]))
    # k2 = d^2 / 2: .5, .5, .480453 / 2 = .240227, 6.25 / 2 = 3.125
    close(k2(logp, ref), torch.tensor([[0.5, 0.5, 0.240227, 3.125]]))
    # k3 = e^-d - 1 + d:
    #   d = 1:     .367879 - 1 + 1 = .367879
    #   d = -1:    2.718282 - 1 - 1 = .718282
    #   d = ln 2:  q/p = .25/.5 = .5;  .5 - 1 + .693147 = .193147
    #   d = -2.5:  12.182494 - 1 - 2.5 = 8.682494
    close(k3(logp, ref), torch.tensor([[0.367879, 0.718282, 0.193147, 8.682494]]))


def test_k3_is_not_symmetric():
    a, b = torch.tensor([-1.0]), torch.tensor([-2.0])
    assert float(k3(a, b)) != pytest.approx(float(k3(b, a)))


def test_k3_non_negative_on_random_tensors():
    g = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 5.0, 20.0):
        x = -torch.rand(50, 40, generator=g) * scale
        y = -torch.rand(50, 40, generator=g) * scale
        out = k3(x, y)
        assert out.shape == (50, 40)
        assert (out >= 0).all()


def test_k3_non_negative_when_logps_nearly_equal():
    g = torch.Generator().manual_seed(0)
    x = -torch.rand(100_000, generator=g) * 5
    y = x + torch.randn(100_000, generator=g) * 1e-3
    assert (k3(x, y) >= 0).all()


@pytest.mark.parametrize("name", ["k1", "k2", "k3", "fk1", "fk2", "fk3"])
def test_zero_when_equal(name):
    x = -torch.rand(6, 9, generator=torch.Generator().manual_seed(1)) * 5
    assert torch.equal(KL_ESTIMATORS[name](x, x), torch.zeros(6, 9))


def test_k2_non_negative_and_k1_sign():
    g = torch.Generator().manual_seed(2)
    x, y = -torch.rand(200, generator=g) * 5, -torch.rand(200, generator=g) * 5
    assert (k2(x, y) >= 0).all()
    assert ((k1(x, y) > 0) == (x > y)).all()


def _sample(p, q, n, seed):
    """Log-probs under p and q of n tokens drawn from p."""
    s = torch.multinomial(p, n, replacement=True, generator=torch.Generator().manual_seed(seed))
    return p.log()[s], q.log()[s]


def test_k1_and_k3_unbiased_for_kl():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.2, 0.6])
    # KL(p||q) = .5 ln 2.5 + .3 ln 1.5 + .2 ln(1/3) = .458145 + .121640 - .219722 = .360063
    exact = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist(), strict=True))
    assert exact == pytest.approx(0.360063, abs=1e-6)
    lp, lq = _sample(p, q, 200_000, seed=3)
    assert float(k1(lp, lq).mean()) == pytest.approx(exact, abs=0.01)
    assert float(k3(lp, lq).mean()) == pytest.approx(exact, abs=0.01)
    # k2 estimates E_p[(ln p/q)^2] / 2 instead:
    # .5 * (.5 * .916291^2 + .3 * .405465^2 + .2 * 1.098612^2)
    #   = .5 * (.419795 + .049321 + .241390) = .355253
    e_k2 = 0.355253
    assert float(k2(lp, lq).mean()) == pytest.approx(e_k2, abs=0.01)


def test_k3_unbiased_and_lower_variance_than_k1_when_close():
    p = torch.tensor([0.4, 0.3, 0.2, 0.1])
    q = torch.tensor([0.35, 0.3, 0.25, 0.1])
    # KL = .4 ln(.4/.35) + .2 ln(.2/.25) = .053412 - .044629 = .008784
    exact = 0.008784
    lp, lq = _sample(p, q, 200_000, seed=4)
    e1, e3 = k1(lp, lq), k3(lp, lq)
    assert float(e1.mean()) == pytest.approx(exact, abs=1.5e-3)
    assert float(e3.mean()) == pytest.approx(exact, abs=1.5e-3)
    assert float(e3.var()) < float(e1.var()) / 10


# ---------------------------------------------------------------- forward KL(ref || pi)


def test_forward_registered_names():
    assert KL_ESTIMATORS["fk1"] is fk1
    assert KL_ESTIMATORS["fk2"] is fk2
    assert KL_ESTIMATORS["fk3"] is fk3


def test_forward_hand_values():
    # log r = ref - logp:   ln 2,   -ln 2,   0,   1
    logp = torch.tensor([[math.log(0.25), math.log(0.5), -1.0, -2.0]])
    ref = torch.tensor([[math.log(0.5), math.log(0.25), -1.0, -1.0]])
    # fk1 = r log r:  2 ln 2 = 1.386294;  .5 * -ln 2 = -.346574;  0;  e * 1 = 2.718282
    close(fk1(logp, ref), torch.tensor([[1.386294, -0.346574, 0.0, 2.718282]]))
    # fk2 = r (log r)^2 / 2:  2 * .480453 / 2 = .480453;  .5 * .480453 / 2 = .120113;  0;  e / 2
    close(fk2(logp, ref), torch.tensor([[0.480453, 0.120113, 0.0, 1.359141]]))
    # fk3 = r log r - (r - 1):  1.386294 - 1 = .386294;  -.346574 + .5 = .153426;  0;  e - (e - 1) = 1
    close(fk3(logp, ref), torch.tensor([[0.386294, 0.153426, 0.0, 1.0]]))


def test_forward_gradients_by_hand():
    # d fk1 / d logp = -r (log r + 1),  d fk3 / d logp = -r log r   (log r = ln 2, r = 2)
    logp = torch.tensor([math.log(0.25)], requires_grad=True)
    ref = torch.tensor([math.log(0.5)])
    fk1(logp, ref).sum().backward()
    close(logp.grad, torch.tensor([-2.0 * (math.log(2.0) + 1.0)]))
    logp.grad = None
    fk3(logp, ref).sum().backward()
    close(logp.grad, torch.tensor([-2.0 * math.log(2.0)]))


def test_fk2_and_fk3_non_negative_on_random_tensors():
    g = torch.Generator().manual_seed(5)
    for scale in (0.1, 1.0, 5.0):
        x = -torch.rand(50, 40, generator=g) * scale
        y = -torch.rand(50, 40, generator=g) * scale
        assert (fk3(x, y) >= 0).all() and (fk2(x, y) >= 0).all()


def test_forward_estimators_estimate_kl_ref_pi():
    pi = torch.tensor([0.5, 0.3, 0.2])
    ref = torch.tensor([0.2, 0.2, 0.6])
    # KL(ref || pi) = .2 ln(.2/.5) + .2 ln(.2/.3) + .6 ln(.6/.2)
    #              = -.183258 - .081093 + .659167 = .394816   (the reverse KL(pi || ref) is .360063)
    exact = sum(q * math.log(q / p) for p, q in zip(pi.tolist(), ref.tolist(), strict=True))
    assert exact == pytest.approx(0.394816, abs=1e-6)
    lp, lref = _sample(pi, ref, 200_000, seed=6)  # tokens drawn from the policy
    assert float(fk1(lp, lref).mean()) == pytest.approx(exact, abs=0.015)
    assert float(fk3(lp, lref).mean()) == pytest.approx(exact, abs=0.015)
    # fk2 estimates E_ref[(ln ref/pi)^2] / 2 instead:
    # .5 * (.2 * .916291^2 + .2 * .405465^2 + .6 * 1.098612^2) = .5 * (.167918 + .032880 + .724169)
    assert float(fk2(lp, lref).mean()) == pytest.approx(0.462484, abs=0.015)
