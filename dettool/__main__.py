"""``python -m dettool`` (used by torchrun: ``torchrun --nproc_per_node 2 -m dettool train CFG``)."""
from dettool.cli import main

main()
