"""Detection ops on torchvision.ops with faster CPU gradients (same forward, same gradient)."""
