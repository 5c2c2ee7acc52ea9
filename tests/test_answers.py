"""The numbers of the answer key (notebooks/solutions/questions.md) that count something in the
committed files, counted again: an answer cannot drift from the data it quotes."""

from pathlib import Path

import numpy as np
import pytest

from minifreeze import masks as M, storage
from minifreeze.models import get_model

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COLLAPSE = NOTEBOOKS / "results" / "collapse"
ANSWERS = (NOTEBOOKS / "solutions" / "questions.md").read_text(encoding="utf-8")


def _mask(network, seed):
    [path] = COLLAPSE.glob(f"{network}-snip-q0.995-s{seed}-*/model.mfz")
    return storage.load(path).masks


@pytest.mark.parametrize("seed, kept, pixels, effective, units",
                         [(0, 263, 119, 116, 84), (1, 298, 141, 135, 67), (2, 261, 107, 106, 71)])
def test_07a_lenet300_reads_a_sixth_of_the_image(seed, kept, pixels, effective, units):
    masks = _mask("lenet300", seed)
    m = masks["fc1.w"]                                                  # (300, 784)
    e = M.effective(get_model("lenet300"), masks)["fc1.w"]
    assert (int(m.sum()), int((m.sum(axis=0) > 0).sum()), int((e.sum(axis=0) > 0).sum()),
            int((m.sum(axis=1) > 0).sum())) == (kept, pixels, effective, units)
    assert f"| LeNet-300-100, seed {seed} | {kept}" in ANSWERS
    assert f"| {pixels} of 784 ({effective}) | {units} of 300 |" in ANSWERS or \
        f"| {pixels} ({effective}) | {units} |" in ANSWERS


@pytest.mark.parametrize("seed, kept, fewest", [(0, 236, 745), (1, 264, 726), (2, 270, 697)])
def test_07a_every_lenet5_filter_slides_over_the_whole_image(seed, kept, fewest):
    m = _mask("lenet5", seed)["conv1.w"][:, 0]                           # (20, 5, 5)
    read = []
    for taps in m:                                                      # a 5x5 filter, 24x24 outputs
        seen = np.zeros((28, 28), bool)
        for i, j in zip(*np.nonzero(taps)):
            seen[i:i + 24, j:j + 24] = True
        read.append(seen)
    assert int(m.sum()) == kept and min(int(s.sum()) for s in read) == fewest
    assert int(np.logical_or.reduce(read).sum()) == 784
    assert f"| LeNet-5-Caffe, seed {seed} | {kept}" in ANSWERS and f"each filter {fewest}-784" in ANSWERS
