"""A small plain CNN for simulations on a CPU: three conv blocks, dropout, one linear head.

Learning-curve benchmarks retrain a model thousands of times (every strategy, seed and round),
which ResNet-18 makes a matter of hours on two cores; this net costs about 7 M multiply-adds
per 28 px image. Dropout after every block gives MC-dropout its stochastic passes ("dropout
distributed across all layers", GESTALT TMI Sec. IV); explanations see the eval-mode net.
"""

from __future__ import annotations

from torch import Tensor, nn

WIDTHS = (32, 64, 128)
DROPOUT = 0.2


class SmallCNN(nn.Module):
    """conv3x3-BN-ReLU blocks, max-pooled between blocks (the last feature map is kept for
    Grad-CAM), then global average pooling and a linear classifier."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        reads = in_channels
        for block, width in enumerate(WIDTHS):
            conv = nn.Conv2d(reads, width, 3, padding=1, bias=False)
            nn.init.kaiming_normal_(conv.weight)
            layers += [conv, nn.BatchNorm2d(width), nn.ReLU()]
            if block < len(WIDTHS) - 1:
                layers.append(nn.MaxPool2d(2))
            layers.append(nn.Dropout(DROPOUT))
            reads = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(reads, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.classifier(self.pool(self.features(x)).flatten(1))
        return logits
