# Fixtures for health and alert tests: local HTTP servers and receivers, an SMTP server.
from tests.support.alerting import http_server, slack, smtp_server  # noqa: F401
