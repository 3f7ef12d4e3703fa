"""One thread for torch: the models are tiny, and the machines have 2 cores."""

try:
    import torch
except ImportError:  # the device side is tested without torch too
    pass
else:
    torch.set_num_threads(1)
