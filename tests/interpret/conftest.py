"""Hand-built models with a known answer, shared by the interpret tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

SIZE = 32


@pytest.fixture(scope="session")
def _one_torch_thread_session():
    """The same for the session-wide trained model (set up before any module fixture)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread for these tiny tensors: on a shared 2-core machine, two spinning OpenMP
    threads made each small conv ~25x slower (measured 6.1 s vs 0.24 s for the same 94 convs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


WINDOW = (8, 16, 8, 16)  # rows 8..15, columns 8..15: 64 of 1024 pixels


class WindowModel(nn.Module):
    """Class-1 logit = ``k`` x the mean brightness inside a fixed window; class-0 logit = ``offset``.

    Only the window is evidence, so removing it first must drop the class-1 score fastest.
    """

    def __init__(
        self, window: tuple[int, int, int, int] = WINDOW, k: float = 4.0, offset: float = 0.0
    ) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k), requires_grad=False)
        self.offset = offset
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r0, r1, c0, c1 = self.window
        evidence = x[:, :, r0:r1, c0:c1].mean(dim=(1, 2, 3))
        return torch.stack([torch.full_like(evidence, self.offset), self.k * evidence], dim=1)


def window_map(n: int = 2) -> torch.Tensor:
    r0, r1, c0, c1 = WINDOW
    maps = torch.zeros(n, SIZE, SIZE)
    maps[:, r0:r1, c0:c1] = 1.0
    return maps


class SmallCnn(nn.Module):
    """Two 3x3 conv layers, a CAM layer and a pooled linear head: the classifier contract in miniature
    (``cam_layer``, ``cam_layers()``, ``forward_features`` / ``forward_head``), fast to train."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.cam_layer = nn.Identity()
        self.head = nn.Linear(8, 2)

    def cam_layers(self) -> dict[str, nn.Module]:
        return {"final": self.cam_layer}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.body(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.amax(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def square_images(n: int, seed: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise, plus a bright 4x4 square at a random place in odd-numbered images (class 1).

    Returns images [n, 1, size, size], labels [n] and the squares' masks [n, size, size].
    """
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 1, size, size, generator=g)
    y = torch.arange(n) % 2
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    corners = torch.randint(0, size - 4, (n, 2), generator=g)
    for i in range(n):
        if y[i] == 1:
            r, c = corners[i].tolist()
            masks[i, r : r + 4, c : c + 4] = True
    x[:, 0][masks] += 0.7
    return x, y, masks


@pytest.fixture(scope="session")
def trained_cnn(_one_torch_thread_session: None) -> SmallCnn:
    """SmallCnn trained to say whether there is a bright square (accuracy 1 on fresh images)."""
    torch.manual_seed(0)
    model = SmallCnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(20):
        x, y, _ = square_images(16, seed=step)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
