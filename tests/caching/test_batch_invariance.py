import torch

from ecad_ray.batch_invariance import MIN_ROWS, pad_small_linears


def test_small_inputs_take_the_same_path_as_large_batches():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.SiLU(), torch.nn.Linear(128, 768))
    x = torch.randn(64, 256)
    pad_small_linears(model)
    with torch.no_grad():
        full = model(x)
        for rows in (1, 2, 3, 8, MIN_ROWS - 1):
            assert torch.equal(model(x[:rows]), full[:rows]), rows
        # leading dimensions are kept: (batch, tokens, features) in, same layout out
        assert model(x[:6].reshape(2, 3, 256)).shape == (2, 3, 768)
