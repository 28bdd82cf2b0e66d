"""Auto-flagging: rules that pick the sessions worth a human look, run incrementally
or over a range, with sampling and daily caps; and the thumbs-down pipeline that turns
flags into a ranked, deduped triage queue and closes the loop when a fix ships.

The CLI (``goldenloop flag``) and the server call these functions and nothing else.
"""

from __future__ import annotations

from goldenloop.flags.closeloop import close_the_loop, resolve_item
from goldenloop.flags.config import (
    ConfigError,
    FlagConfig,
    QueueSettings,
    default_config,
    load_config,
    parse_config,
    save_config,
    saved_config,
)
from goldenloop.flags.engine import FlagRun, backfill, reset_watermark, run_incremental
from goldenloop.flags.feedback import (
    QueueRefresh,
    TimeToEval,
    items_ready_for_promotion,
    refresh_queue,
    time_to_eval,
)
from goldenloop.flags.loop import FlaggingLoop, start_flagging_loop
from goldenloop.flags.notify import NOTIFIERS, LoopEvent
from goldenloop.flags.rules import RULES, RuleContext, RulePolicy, register_rule

__all__ = [
    "NOTIFIERS",
    "RULES",
    "ConfigError",
    "FlagConfig",
    "FlagRun",
    "FlaggingLoop",
    "LoopEvent",
    "QueueRefresh",
    "QueueSettings",
    "RuleContext",
    "RulePolicy",
    "TimeToEval",
    "backfill",
    "close_the_loop",
    "default_config",
    "items_ready_for_promotion",
    "load_config",
    "parse_config",
    "refresh_queue",
    "register_rule",
    "reset_watermark",
    "resolve_item",
    "run_incremental",
    "save_config",
    "saved_config",
    "start_flagging_loop",
    "time_to_eval",
]
