"""data_prep: real face datasets in, aligned 112x96 crops out (packed format)."""
