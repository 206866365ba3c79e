"""One module per action: ``run_backup``, ``run_restore``, ``run_list``. The CLI calls only these."""
