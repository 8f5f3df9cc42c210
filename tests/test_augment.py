import torch

from fstag.models.augment import crop_or_pad, mixup_batch, spec_mask, specmask_concat
from fstag.infer.predictor import tta_crop
from fstag.models.module import lr_factor


def test_crop_or_pad_long_and_short():
    x = torch.arange(3 * 4 * 200, dtype=torch.float32).reshape(3, 4, 200)
    first = crop_or_pad(x, 150, random=False)
    assert torch.equal(first, x[..., :150])
    g = torch.Generator().manual_seed(0)
    rnd = crop_or_pad(x, 150, random=True, generator=g)
    start = int(rnd[0, 0, 0])  # values encode their time index in row 0 band 0
    assert torch.equal(rnd, x[..., start : start + 150])
    short = torch.ones(3, 4, 20)
    padded = crop_or_pad(short, 150, random=False, pad_value=-1.0)
    assert padded.shape == (3, 4, 150) and padded[..., :20].eq(1).all() and padded[..., 20:].eq(-1).all()
    offsets = {int(crop_or_pad(short, 150, random=True, pad_value=0).sum(dim=(0, 1)).nonzero()[0]) for _ in range(30)}
    assert len(offsets) > 1  # random offsets for padding


def test_specmask_concat_only_for_short_clips():
    g = torch.Generator().manual_seed(1)
    short = torch.ones(3, 64, 40)
    out = specmask_concat(short, 150, time_mask=30, freq_mask=15, value=0.0, generator=g)
    assert out.shape == (3, 64, 80)
    assert torch.equal(out[..., :40], short)           # the original is untouched
    assert (out[..., 40:] == 0).any()                   # the copy is masked
    long = torch.ones(3, 64, 200)
    assert specmask_concat(long, 150, 30, 15) is long
    masked = spec_mask(torch.ones(1, 64, 100), 30, 15, generator=torch.Generator().manual_seed(3))
    zero_cols = (masked[0] == 0).all(dim=0).sum()
    zero_rows = (masked[0] == 0).all(dim=1).sum()
    assert zero_cols <= 30 and zero_rows <= 15


def test_tta_crops_are_deterministic():
    x = torch.randn(3, 64, 300)
    aug = {"specmask_concat": True, "time_mask": 30, "freq_mask": 15, "mask_value": 0.0}
    a = [tta_crop(x, p, 5, 150, aug, 0.0, seed=9) for p in range(5)]
    b = [tta_crop(x, p, 5, 150, aug, 0.0, seed=9) for p in range(5)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[1], a[2])


def test_mixup_and_schedule():
    torch.manual_seed(0)
    x = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)])
    y = torch.tensor([0, 1])
    w = torch.tensor([1.0, 0.5])
    xm, ya, yb, wa, wb, lam = mixup_batch(x, y, w, alpha=3.0)
    assert 0 < lam < 1
    # each mixed sample is lam * own + (1 - lam) * partner
    for i in range(2):
        partner = int((yb[i] == y).nonzero()[0])
        assert torch.allclose(xm[i], lam * x[i] + (1 - lam) * x[partner])
    assert lr_factor(0, 50, [20, 30, 40], 0.7) == 1.0
    assert abs(lr_factor(25, 50, [20, 30, 40], 0.7) - 0.5 * 0.7) < 1e-12
    assert abs(lr_factor(45, 50, [20, 30, 40], 0.7) - 0.5 * (1 + __import__("math").cos(__import__("math").pi * 0.9)) * 0.7**3) < 1e-12
