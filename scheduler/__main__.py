"""``python -m scheduler`` is ``cekura-scheduler``."""

from scheduler.health import main

main()
