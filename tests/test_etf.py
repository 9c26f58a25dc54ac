import pytest
import torch

from ncutils.etf import ETFClassifier, etf_gram, simplex_etf


@pytest.mark.parametrize("k,d,seed", [(2, 1, None), (3, 2, None), (10, 9, None), (10, 10, None),
                                      (10, 512, None), (10, 9, 3), (7, 64, 0), (100, 100, 1)])
def test_gram_matrix_is_the_simplex_etf(k, d, seed):
    frame = simplex_etf(k, d, seed=seed, dtype=torch.float64)
    assert frame.shape == (d, k)
    torch.testing.assert_close(frame.T @ frame, etf_gram(k), atol=1e-12, rtol=0)
    torch.testing.assert_close(frame.sum(1), torch.zeros(d, dtype=torch.float64), atol=1e-12, rtol=0)


def test_seeded_frames_are_rotations_and_reproducible():
    a, b, c = simplex_etf(5, 16, seed=1), simplex_etf(5, 16, seed=1), simplex_etf(5, 16, seed=2)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(simplex_etf(5, 16), simplex_etf(5, 16))


@pytest.mark.parametrize("k,d", [(1, 4), (10, 8), (0, 3), (2.5, 3), (3, "4")])
def test_bad_sizes_are_refused(k, d):
    with pytest.raises(ValueError, match="num_classes|dim"):
        simplex_etf(k, d)


def test_fixed_classifier_is_a_buffer_that_never_trains():
    layer = ETFClassifier(12, 4, bias=True)
    before = layer.weight.clone()
    assert [n for n, _ in layer.named_parameters()] == ["bias"]
    assert "weight" in layer.state_dict()
    opt = torch.optim.SGD(layer.parameters(), lr=1.0, weight_decay=0.1, momentum=0.9)
    for _ in range(3):
        loss = layer(torch.randn(8, 12)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(layer.weight, before)
    torch.testing.assert_close(layer.weight.double() @ layer.weight.double().T, etf_gram(4),
                               atol=1e-6, rtol=0)
