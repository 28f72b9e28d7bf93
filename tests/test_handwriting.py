"""Digits that are not MNIST (trainlab.data.handwriting), the preparation that reads them (paper
estimated locally), and the augmentations of the mnist-draw preset."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from trainlab.data.augment import make_augment, random_affine, random_blur, random_contrast, random_stroke
from trainlab.data.handwriting import TEMPLATES, digit_strokes, drawn_digits, photograph, render_strokes
from trainlab.data.images import open_image, prepare_digit
from trainlab.recipes import AugmentConfig, load_recipe


def test_drawn_digits_are_reproducible_and_varied():
    a, ya = drawn_digits(3, seed=5)
    b, yb = drawn_digits(3, seed=5)
    assert a == b and list(ya) == list(yb) == [d for d in range(10) for _ in range(3)]
    arrays = [np.asarray(Image.open(io.BytesIO(f))) for f in a]
    assert all(x.shape == (280, 280) and x.max() == 255 and 0.02 < (x > 0).mean() < 0.4 for x in arrays)
    assert not np.array_equal(arrays[0], arrays[1])  # two hands write the same 0 differently
    assert set(TEMPLATES) == set(range(10))


def test_prepared_photo_has_clean_paper_under_uneven_light():
    """A dark digit on tinted paper with a strong light gradient: the ink is found, the paper is 0."""
    rng = np.random.default_rng(0)
    ink = np.asarray(render_strokes(digit_strokes(4, rng), rng, width=22))
    photo = open_image(photograph(ink, rng))
    seen = prepare_digit(photo)[..., 0].astype(float)
    assert seen.max() == 255
    border = np.concatenate([seen[:3].ravel(), seen[-3:].ravel(), seen[:, :3].ravel(), seen[:, -3:].ravel()])
    assert border.mean() < 3  # no grey box from the lighting, as MNIST has none
    ys, xs = np.nonzero(seen > 60)
    assert 11 <= ys.mean() <= 17 and 11 <= xs.mean() <= 17  # centred by mass like MNIST


def test_mnist_style_input_is_unchanged_in_substance():
    """An MNIST-format image (light digit on black) still comes out as the same digit."""
    rng = np.random.default_rng(1)
    im = render_strokes(digit_strokes(1, rng), rng, canvas=28, width=3)
    out = prepare_digit(im)[..., 0]
    assert out.max() == 255 and (out > 128).sum() >= 10


def test_augmentations_are_batched_seeded_and_do_what_they_say():
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 8:20, 13:15] = 255.0  # a vertical bar
    u = torch.rand(64, 4, generator=torch.Generator().manual_seed(0))  # per-image uniform draws
    thick_or_thin = random_stroke(x, 1.0, u[:, 0])
    ink = (thick_or_thin > 0).flatten(1).sum(1)
    assert (ink > 24).any() and (ink < 24).any()  # some thickened, some thinned (24 px of bar)
    rot = random_affine(x, 30, 0.0, 0.0, u)
    assert torch.equal(rot, random_affine(x, 30, 0.0, 0.0, u.clone())) and not torch.allclose(rot[0], rot[1])
    assert abs(rot.sum() / x.sum() - 1) < 0.1  # rotation keeps the ink
    blurred = random_blur(x, 1.0, u[:, 1])
    assert blurred.max() < 255 and abs(blurred.sum() / x.sum() - 1) < 1e-4
    faint = random_contrast(x, 0.5, u[:, 2])
    peaks = faint.flatten(1).max(1).values
    assert peaks.min() >= 127 and peaks.max() <= 255 and peaks.std() > 0
    cfg = AugmentConfig(rotate=10, scale=0.1, shift=0.05, stroke=0.5, blur=0.3, contrast=0.4)
    aug = make_augment(cfg)
    out = aug(x.clone(), aug.draw(64, torch.Generator().manual_seed(0)))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize("bad", [{"rotate": -1}, {"scale": 1.5}, {"stroke": 2}, {"contrast": 1}])
def test_augment_values_are_checked(bad):
    from trainlab.errors import RecipeError
    with pytest.raises(RecipeError, match="augment"):
        load_recipe("mnist-draw", overrides={f"augment.{k}": v for k, v in bad.items()})


def test_mnist_draw_preset():
    r = load_recipe("mnist-draw")
    assert r.data.name == "mnist" and r.augment.stroke > 0 and r.augment.rotate > 0
    assert sum(1 for layer in r.model.layers if layer.type == "conv2d") == 4


def test_a_one_cycle_run_of_four_steps_trains(tiny_train):
    """pct_start 0.25 of 4 steps is a one-step warm-up, which torch's OneCycleLR divides by zero on."""
    run = tiny_train({"schedule": {"name": "onecycle", "pct_start": 0.25}, "batch_size": 45, "epochs": 1}, save=False)
    assert len(run.history) == 1
