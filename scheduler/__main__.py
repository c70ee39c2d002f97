"""``python -m scheduler`` is ``cekura-scheduler``."""

from scheduler.cli import main

main()
