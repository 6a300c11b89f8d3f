"""One exception type for input the user can fix.

The CLI prints ``str(error)`` on one line of stderr and exits with code 2; the dashboard shows it
with ``st.error``. Anything else is a bug and keeps its traceback.
"""


class MtpruneError(Exception):
    """A problem with the user's input (path, task, model, number), stated in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
