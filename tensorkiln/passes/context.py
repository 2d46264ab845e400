"""What a pass reports while it runs: each rewrite, and each rule whose check said no."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PassContext:
    """Collects one pass's log. Passes call `rewrote` for each change they make and
    `declined` when a rule matched but its check refused (with the check's reason).

    `dim_bounds` is what the build knows of the inputs' symbolic dims: the largest size each
    may take (the engine refuses inputs outside its optimization profiles)."""

    rewrites: dict[str, int] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    declines: list[tuple[str, str, str]] = field(default_factory=list)
    dim_bounds: dict[str, int] = field(default_factory=dict)

    def rewrote(self, rule: str, node: str = "", detail: str = "") -> None:
        self.rewrites[rule] = self.rewrites.get(rule, 0) + 1
        if detail or node:
            self.details.append(f"{rule}: {node}{' - ' + detail if detail else ''}")

    def declined(self, rule: str, node: str, reason: str) -> None:
        self.declines.append((rule, node, reason))


@dataclass(frozen=True)
class PassReport:
    name: str
    layers_before: int
    layers_after: int
    rewrites: dict[str, int] = field(default_factory=dict)
    details: tuple[str, ...] = ()
    declines: tuple[tuple[str, str, str], ...] = ()

    def to_json(self) -> dict:
        return {"name": self.name, "layers_before": self.layers_before, "layers_after": self.layers_after,
                "rewrites": dict(self.rewrites), "details": list(self.details),
                "declines": [list(d) for d in self.declines]}
