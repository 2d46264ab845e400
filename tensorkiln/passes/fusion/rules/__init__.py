"""Rule lists (data): each module holds one list of `Rule`s that a pass in `passes/` applies."""
