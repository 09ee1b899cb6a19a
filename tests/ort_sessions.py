"""What the tests read of an ONNX Runtime session's settings."""


def spinning(session) -> str:
    """The session's allow_spinning setting ("1": idle threads spin-wait for the next run)."""
    entry = "session.intra_op.allow_spinning"
    return session.get_session_options().get_session_config_entry(entry)
