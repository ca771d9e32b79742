"""Client-side instrumentation for evolution-store: trace agents, group their runs into tasks
and executions, and attach rewards to what they did.

```python
import instrumentation as evo

evo.configure(endpoint="http://127.0.0.1:8000", service_name="support-bot")

@evo.track_evolution(tags=["v2"])
def answer(question: str) -> str: ...

prompt = evo.get_prompt("support-bot", key=user_id, fallback="Answer: {{ question }}")
with evo.task("answer", input={"q": question}, prompt=prompt) as t:
    reply = answer(prompt.render(question=question))
    t.reward(1.0 if reply == expected else 0.0)

policy = evo.Policy.load("learned/policy.json")  # a PPO run's output; logs its decisions
action, prob = policy.choose("next_step", {"intent": "refund"}, ["search", "answer"])
```

Importing this package loads only the OpenTelemetry API/SDK and httpx; the server stack
(`evolution_store`, SQLAlchemy, FastAPI) is imported only by `configure(store_url=…)`.
"""

from ._client import AsyncEvolutionClient, EvolutionClient
from ._config import TracingSession, configure
from ._context import TaskHandle, task
from ._decisions import Policy, decide, policy_registry_agent
from ._decorator import track_evolution
from ._exceptions import EvolutionClientError
from ._prompts import PromptHandle, get_prompt
from ._proxy import with_evolution_tracking
from ._rewards import emit_reward, make_link_attributes, make_tag_attributes

__all__ = [
    "AsyncEvolutionClient",
    "EvolutionClient",
    "EvolutionClientError",
    "Policy",
    "PromptHandle",
    "TaskHandle",
    "TracingSession",
    "configure",
    "decide",
    "emit_reward",
    "get_prompt",
    "make_link_attributes",
    "make_tag_attributes",
    "policy_registry_agent",
    "task",
    "track_evolution",
    "with_evolution_tracking",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__"):
        _obj.__module__ = __name__
del _name, _obj
