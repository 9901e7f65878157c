"""A simulated annotators' scoring function that kills its own process once, on its first call
after the first loop iteration is recorded (when $RANKLOOP_TEST_KILL_DB names the database):
a crash in the middle of the second iteration's feedback step."""

import os
import signal
import sqlite3


def length_or_die(prompts, responses):
    path = os.environ.get("RANKLOOP_TEST_KILL_DB")
    if path:
        with sqlite3.connect(path) as conn:
            recorded = conn.execute("SELECT COUNT(*) FROM policy_iterations").fetchone()[0]
        if recorded >= 1:
            os.kill(os.getpid(), signal.SIGKILL)
    return [-float(len(text)) for text in responses]
