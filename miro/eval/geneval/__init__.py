"""GenEval (Ghosh et al. 2023): the rules (``rules``), usable with the real detector or the shapes-world one."""
