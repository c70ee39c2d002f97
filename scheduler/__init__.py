"""cekura-scheduler: run Cekura test scenarios on a schedule kept in jobs.toml."""

__version__ = "0.1.0"
