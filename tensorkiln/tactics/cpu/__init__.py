"""CPU tactics beyond the reference ones (none yet: the torch reference is the CPU kernel)."""
