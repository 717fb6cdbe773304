"""The store-and-forward runtime: one ``Agent`` per party (role + store + Maildir + outbox).

See docs/runtime.md.  ``Agent`` (runtime.py) processes one unit of work at a time
synchronously; ``serve`` (daemon.py) runs agents (two threads each) and the SMTP server (asyncio);
``register_effect`` (effects.py) lets other issues add effect handlers; ``commands`` is how the
CLI hands a Command to a running agent; ``fault`` is the crash-test hook (SETMAIL_FAULT).
"""
from setmail.agent.effects import EffectContext, register_effect
from setmail.agent.runtime import Agent, AgentConfig

__all__ = ["Agent", "AgentConfig", "EffectContext", "register_effect"]
