"""The built-in routing playbook: the policy used when the config has no ``policy.rules``.

Read top to bottom; the first rule that holds decides.

| rule              | when                                              | route                          |
|-------------------|---------------------------------------------------|--------------------------------|
| tier-hint         | the caller named a tier (``x-tierwise-tier``)     | that tier (handled by engine)  |
| critical          | ``risk: critical``                                | execution, falling back to review |
| quality-high-hard | ``quality: high`` and code, math or reasoning     | execution                      |
| quality-high      | ``quality: high``                                 | review (skips draft)           |
| fast-short        | input < 500 tokens and latency budget < 1 s       | draft                          |
| code-math         | code or math task, or code/math in the conversation | execution                    |
| multi-step        | multi-step reasoning                              | execution                      |
| cheap-task        | summarize, classify, extract, translate, format, qa | draft                        |
| (default)         | anything else (chat, open questions)              | review                         |

Draft routes fall back to the review tier so an outage of the cheap provider degrades cost, not
availability.
"""

from __future__ import annotations

from ..config import Rule, Target

CHEAP_TASKS: tuple[str, ...] = ("summarize", "classify", "extract", "translate", "format", "qa")

PLAYBOOK_RULES: tuple[Rule, ...] = (
    Rule(name="critical", when={"risk": "critical"}, tier="execution", fallbacks=("review",)),
    Rule(
        name="quality-high-hard",
        when={"quality": "high", "task": {"in": ["code", "math", "reasoning"]}},
        tier="execution",
    ),
    Rule(name="quality-high", when={"quality": "high"}, tier="review", fallbacks=("execution",)),
    Rule(
        name="fast-short",
        when={"input_tokens": {"<": 500}, "latency_ms": {"<": 1000}},
        tier="draft",
        fallbacks=("review",),
    ),
    Rule(name="code-math", when={"task": {"in": ["code", "math"]}}, tier="execution", fallbacks=("review",)),
    Rule(
        name="code-in-conversation",
        when={"has_code": True, "task": {"in": ["chat", "reasoning"]}},
        tier="execution",
        fallbacks=("review",),
    ),
    Rule(name="multi-step", when={"multi_step": True}, tier="execution", fallbacks=("review",)),
    Rule(name="cheap-task", when={"task": {"in": list(CHEAP_TASKS)}}, tier="draft", fallbacks=("review",)),
)

PLAYBOOK_DEFAULT = Target(tier="review", fallbacks=("execution",))
