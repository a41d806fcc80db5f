"""The lengths of the model app's text columns that hold what a caller chose, and that code cuts values to.

A leaf: the models size their columns by these, and the writers (the audit
trail, the call log) cut values to fit them, without importing each other.
"""

# AuditEvent's detail, and every row's username snapshot (Django's own username length).
DETAIL_LENGTH = 200
USERNAME_LENGTH = 150

# CallRecord's name (a tool, prompt or URI) and its arguments' digest (SHA-256, hex).
NAME_LENGTH = 400
ARGUMENTS_DIGEST_LENGTH = 64
