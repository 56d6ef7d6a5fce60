"""The `readmit` command line: one entry point, one module of subcommands per area."""
