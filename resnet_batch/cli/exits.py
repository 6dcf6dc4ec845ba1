"""The command's exit statuses: every command ends with one of these."""

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2  # done; an input lacks its row or a step failed; bad arguments
EXIT_SIGNAL_BASE = 128  # a job stopped by signal N exits 128 + N, as shells report it
